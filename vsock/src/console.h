/* The console socket calls (console.c), added to the addon's exports by vsock.c's init. */
#ifndef HULL_VSOCK_CONSOLE_H
#define HULL_VSOCK_CONSOLE_H
#include <node_api.h>

napi_status console_init(napi_env env, napi_value exports);

#endif
