/*
 * hull-vsock: AF_VSOCK stream sockets for Node (Node-API, C). Node's net module cannot carry them: libuv's
 * uv_guess_handle() calls an AF_VSOCK fd UV_UNKNOWN_HANDLE, so `new net.Socket({ fd })` throws
 * ERR_INVALID_FD_TYPE and `server.listen({ fd })` fails with EINVAL.
 *
 * This file is deliberately thin: every socket is non-blocking, each call below is one system call that returns
 * at once (a result >= 0, or -errno, never a thrown error: JavaScript turns errno values into errors with names),
 * and readiness comes from a libuv poll handle (uv_poll_t, epoll underneath) on node's own event loop. So nothing
 * blocks a thread, nothing runs on libuv's thread pool, closing a socket cancels whatever waits on it at once,
 * and node's exit never waits for a read that cannot end. The stream logic (Duplex, backpressure, EOF, connect
 * timeouts) lives in JavaScript (socket.ts, server.ts).
 *
 * Handle lifetime: a Handle owns one fd. While it polls, its JavaScript object is held strongly (as libuv handles
 * hold theirs), so a socket waiting for data is not collected; when it stops polling the reference is weak again.
 * close() stops polling, closes the uv_poll_t (freed in its close callback) and the fd. A Handle collected
 * without close() is closed by its finalizer; a worker's teardown closes its handles through a cleanup hook.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/vm_sockets.h>
#include <node_api.h>
#include <uv.h>

#include "console.h"

typedef struct {
  napi_env env;
  /* The JavaScript object (from napi_wrap): weak, strong while polling. */
  napi_ref wrapper;
  napi_async_context async;
  /* Created on the first poll(); freed by its close callback. */
  uv_poll_t *poll;
  int fd;
  int events;
  bool unrefed;
  bool hook;
} vsock_handle;

#define CHECK(call)                                                                                                    \
  do {                                                                                                                 \
    if ((call) != napi_ok) return throw_last(env);                                                                     \
  } while (0)

static napi_value throw_last(napi_env env) {
  const napi_extended_error_info *info = NULL;
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) {
    napi_get_last_error_info(env, &info);
    napi_throw_error(env, NULL, info && info->error_message ? info->error_message : "hull-vsock: Node-API call failed");
  }
  return NULL;
}

static napi_value int_value(napi_env env, int64_t n) {
  napi_value v;
  if (napi_create_int64(env, n, &v) != napi_ok) return throw_last(env);
  return v;
}

/* A uint32 argument (CIDs and ports are u32). Throws a TypeError for anything else. */
static bool arg_u32(napi_env env, napi_value v, const char *what, uint32_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != d || d < 0 || d > 4294967295.0 || (double)(uint32_t)d != d) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be an integer in [0, 2^32-1]", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
    return false;
  }
  *out = (uint32_t)d;
  return true;
}

static bool arg_i32(napi_env env, napi_value v, const char *what, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a number", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  return true;
}

/* The bytes [offset, offset + length) of a Uint8Array argument, bounds-checked. */
static bool arg_bytes(napi_env env, napi_value *argv, uint8_t **data, size_t *length) {
  bool is_typed;
  napi_typedarray_type type;
  size_t len;
  void *base;
  int32_t off, want;
  if (napi_is_typedarray(env, argv[0], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, argv[0], &type, &len, &base, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "buffer must be a Uint8Array");
    return false;
  }
  if (!arg_i32(env, argv[1], "offset", &off) || !arg_i32(env, argv[2], "length", &want)) return false;
  if (off < 0 || want < 0 || (size_t)off > len || (size_t)want > len - (size_t)off) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "offset and length must lie within the buffer");
    return false;
  }
  *data = (uint8_t *)base + off;
  *length = (size_t)want;
  return true;
}

static vsock_handle *this_handle(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  vsock_handle *h = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok || napi_unwrap(env, self, (void **)&h) != napi_ok) {
    throw_last(env);
    return NULL;
  }
  return h;
}

static void on_poll_closed(uv_handle_t *p) { free(p); }

static void stop_polling(vsock_handle *h) {
  if (h->poll && h->events) {
    uv_poll_stop(h->poll);
    h->events = 0;
    napi_reference_unref(h->env, h->wrapper, NULL);
  }
}

static void cleanup_hook(void *arg);

/* Stops polling, closes the poll handle and the fd. Safe to call twice. Never calls into JavaScript. */
static void close_handle(vsock_handle *h, bool from_hook) {
  if (h->fd < 0) return;
  stop_polling(h);
  if (h->poll) {
    h->poll->data = NULL;
    uv_close((uv_handle_t *)h->poll, on_poll_closed);
    h->poll = NULL;
  }
  close(h->fd);
  h->fd = -1;
  if (h->hook && !from_hook) napi_remove_env_cleanup_hook(h->env, cleanup_hook, h);
  h->hook = false;
}

static void cleanup_hook(void *arg) { close_handle((vsock_handle *)arg, true); }

static void finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  vsock_handle *h = data;
  close_handle(h, false);
  if (h->async) napi_async_destroy(env, h->async);
  napi_delete_reference(env, h->wrapper);
  free(h);
}

/* Readiness: calls this.onready(status, events) as a top-level callback (microtasks run after it). */
static void on_poll(uv_poll_t *p, int status, int events) {
  vsock_handle *h = p->data;
  if (!h || h->fd < 0) return;
  napi_env env = h->env;
  if (status < 0 && h->events) {
    /* libuv stopped the handle itself (POLLERR). */
    h->events = 0;
    napi_reference_unref(env, h->wrapper, NULL);
  }
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value self = NULL, fn, argv[2], result;
  napi_valuetype type = napi_undefined;
  if (napi_get_reference_value(env, h->wrapper, &self) == napi_ok && self &&
      napi_get_named_property(env, self, "onready", &fn) == napi_ok && napi_typeof(env, fn, &type) == napi_ok &&
      type == napi_function && napi_create_int32(env, status, &argv[0]) == napi_ok &&
      napi_create_int32(env, events, &argv[1]) == napi_ok) {
    if (napi_make_callback(env, h->async, self, fn, 2, argv, &result) == napi_pending_exception) {
      napi_value err;
      if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
    }
  }
  napi_close_handle_scope(env, scope);
}

/* new Handle(fd): adopts a non-blocking AF_VSOCK fd (from socket() or accept()). */
static napi_value handle_new(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], self, name;
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  if (argc < 1 || !arg_i32(env, argv[0], "fd", &fd)) return NULL;
  if (fd < 0) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "fd must be >= 0");
    return NULL;
  }
  vsock_handle *h = calloc(1, sizeof *h);
  if (!h) {
    napi_throw_error(env, NULL, "hull-vsock: out of memory");
    return NULL;
  }
  h->env = env;
  h->fd = fd;
  if (napi_wrap(env, self, h, finalize, NULL, &h->wrapper) != napi_ok) {
    free(h);
    return throw_last(env);
  }
  CHECK(napi_create_string_utf8(env, "hull-vsock", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_async_init(env, NULL, name, &h->async));
  if (napi_add_env_cleanup_hook(env, cleanup_hook, h) == napi_ok) h->hook = true;
  return self;
}

static struct sockaddr_vm vm_addr(uint32_t cid, uint32_t port) {
  struct sockaddr_vm a;
  memset(&a, 0, sizeof a);
  a.svm_family = AF_VSOCK;
  a.svm_cid = cid;
  a.svm_port = port;
  return a;
}

/* connect(cid, port) -> 0 | -errno (-EINPROGRESS: wait for writable, then socketError()). */
static napi_value handle_connect(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  uint32_t cid, port;
  vsock_handle *h = this_handle(env, info, &argc, argv);
  if (!h || argc < 2 || !arg_u32(env, argv[0], "cid", &cid) || !arg_u32(env, argv[1], "port", &port)) return NULL;
  if (h->fd < 0) return int_value(env, -EBADF);
  struct sockaddr_vm a = vm_addr(cid, port);
  int r;
  do r = connect(h->fd, (struct sockaddr *)&a, sizeof a);
  while (r < 0 && errno == EINTR);
  return int_value(env, r < 0 ? -errno : 0);
}

/* bind(cid, port) -> 0 | -errno */
static napi_value handle_bind(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  uint32_t cid, port;
  vsock_handle *h = this_handle(env, info, &argc, argv);
  if (!h || argc < 2 || !arg_u32(env, argv[0], "cid", &cid) || !arg_u32(env, argv[1], "port", &port)) return NULL;
  if (h->fd < 0) return int_value(env, -EBADF);
  struct sockaddr_vm a = vm_addr(cid, port);
  return int_value(env, bind(h->fd, (struct sockaddr *)&a, sizeof a) < 0 ? -errno : 0);
}

/* listen(backlog) -> 0 | -errno */
static napi_value handle_listen(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t backlog;
  vsock_handle *h = this_handle(env, info, &argc, argv);
  if (!h || argc < 1 || !arg_i32(env, argv[0], "backlog", &backlog)) return NULL;
  if (h->fd < 0) return int_value(env, -EBADF);
  return int_value(env, listen(h->fd, backlog) < 0 ? -errno : 0);
}

/* accept() -> a new non-blocking fd | -errno (-EAGAIN: none pending). */
static napi_value handle_accept(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  vsock_handle *h = this_handle(env, info, &argc, NULL);
  if (!h) return NULL;
  if (h->fd < 0) return int_value(env, -EBADF);
  int fd;
  do fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  return int_value(env, fd < 0 ? -errno : fd);
}

/* read(buffer, offset, length) -> bytes read (0 = end of stream) | -errno (-EAGAIN: nothing yet). */
static napi_value handle_read(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  uint8_t *data;
  size_t len;
  vsock_handle *h = this_handle(env, info, &argc, argv);
  if (!h || argc < 3 || !arg_bytes(env, argv, &data, &len)) return NULL;
  if (h->fd < 0) return int_value(env, -EBADF);
  ssize_t n;
  do n = recv(h->fd, data, len, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  return int_value(env, n < 0 ? -errno : n);
}

/* write(buffer, offset, length) -> bytes written (maybe fewer) | -errno (-EAGAIN: the send buffer is full). */
static napi_value handle_write(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  uint8_t *data;
  size_t len;
  vsock_handle *h = this_handle(env, info, &argc, argv);
  if (!h || argc < 3 || !arg_bytes(env, argv, &data, &len)) return NULL;
  if (h->fd < 0) return int_value(env, -EBADF);
  ssize_t n;
  do n = send(h->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return int_value(env, n < 0 ? -errno : n);
}

/* shutdown(how) with SHUT_RD = 0, SHUT_WR = 1, SHUT_RDWR = 2 -> 0 | -errno */
static napi_value handle_shutdown(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t how;
  vsock_handle *h = this_handle(env, info, &argc, argv);
  if (!h || argc < 1 || !arg_i32(env, argv[0], "how", &how)) return NULL;
  if (h->fd < 0) return int_value(env, -EBADF);
  return int_value(env, shutdown(h->fd, how) < 0 ? -errno : 0);
}

/* socketError() -> the pending error (SO_ERROR) as -errno, or 0. */
static napi_value handle_socket_error(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  vsock_handle *h = this_handle(env, info, &argc, NULL);
  if (!h) return NULL;
  if (h->fd < 0) return int_value(env, -EBADF);
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return int_value(env, -errno);
  return int_value(env, -err);
}

static napi_value address_of(napi_env env, napi_callback_info info, bool peer) {
  size_t argc = 0;
  vsock_handle *h = this_handle(env, info, &argc, NULL);
  if (!h) return NULL;
  if (h->fd < 0) return int_value(env, -EBADF);
  struct sockaddr_vm a;
  socklen_t len = sizeof a;
  memset(&a, 0, sizeof a);
  int r = peer ? getpeername(h->fd, (struct sockaddr *)&a, &len) : getsockname(h->fd, (struct sockaddr *)&a, &len);
  if (r < 0) return int_value(env, -errno);
  napi_value arr, cid, port;
  CHECK(napi_create_array_with_length(env, 2, &arr));
  CHECK(napi_create_uint32(env, a.svm_cid, &cid));
  CHECK(napi_create_uint32(env, a.svm_port, &port));
  CHECK(napi_set_element(env, arr, 0, cid));
  CHECK(napi_set_element(env, arr, 1, port));
  return arr;
}

/* sockname() / peername() -> [cid, port] | -errno */
static napi_value handle_sockname(napi_env env, napi_callback_info info) { return address_of(env, info, false); }
static napi_value handle_peername(napi_env env, napi_callback_info info) { return address_of(env, info, true); }

/* poll(events): watch for UV_READABLE (1) | UV_WRITABLE (2); 0 stops. -> 0 | -errno */
static napi_value handle_poll(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t events;
  vsock_handle *h = this_handle(env, info, &argc, argv);
  if (!h || argc < 1 || !arg_i32(env, argv[0], "events", &events)) return NULL;
  if (h->fd < 0) return int_value(env, -EBADF);
  events &= UV_READABLE | UV_WRITABLE;
  if (events == h->events) return int_value(env, 0);
  if (events == 0) {
    stop_polling(h);
    return int_value(env, 0);
  }
  if (!h->poll) {
    uv_loop_t *loop;
    CHECK(napi_get_uv_event_loop(env, &loop));
    uv_poll_t *p = calloc(1, sizeof *p);
    if (!p) return int_value(env, -ENOMEM);
    int r = uv_poll_init(loop, p, h->fd);
    if (r < 0) {
      free(p);
      return int_value(env, r);
    }
    p->data = h;
    if (h->unrefed) uv_unref((uv_handle_t *)p);
    h->poll = p;
  }
  int r = uv_poll_start(h->poll, events, on_poll);
  if (r < 0) return int_value(env, r);
  if (!h->events) napi_reference_ref(env, h->wrapper, NULL);
  h->events = events;
  return int_value(env, 0);
}

/* ref() / unref(): whether an active poll keeps node's event loop alive (it does by default). */
static napi_value set_ref(napi_env env, napi_callback_info info, bool ref) {
  size_t argc = 0;
  vsock_handle *h = this_handle(env, info, &argc, NULL);
  if (!h) return NULL;
  h->unrefed = !ref;
  if (h->poll) {
    if (ref) uv_ref((uv_handle_t *)h->poll);
    else uv_unref((uv_handle_t *)h->poll);
  }
  return NULL;
}
static napi_value handle_ref(napi_env env, napi_callback_info info) { return set_ref(env, info, true); }
static napi_value handle_unref(napi_env env, napi_callback_info info) { return set_ref(env, info, false); }

/* close(): stops polling and closes the fd. Idempotent. */
static napi_value handle_close(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  vsock_handle *h = this_handle(env, info, &argc, NULL);
  if (!h) return NULL;
  close_handle(h, false);
  return NULL;
}

static napi_value handle_fd(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  vsock_handle *h = this_handle(env, info, &argc, NULL);
  if (!h) return NULL;
  return int_value(env, h->fd);
}

/* socket() -> a new non-blocking, close-on-exec AF_VSOCK stream fd | -errno */
static napi_value vsock_socket(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return int_value(env, fd < 0 ? -errno : fd);
}

/*
 * _socketpair() -> [fd, fd] | -errno: a connected, non-blocking AF_UNIX stream pair. For tests only: it lets the
 * stream logic (which is the same for any stream socket) run where no vsock transport connects anything.
 */
static napi_value vsock_socketpair(napi_env env, napi_callback_info info) {
  (void)info;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) return int_value(env, -errno);
  napi_value arr, a, b;
  CHECK(napi_create_array_with_length(env, 2, &arr));
  CHECK(napi_create_int32(env, fds[0], &a));
  CHECK(napi_create_int32(env, fds[1], &b));
  CHECK(napi_set_element(env, arr, 0, a));
  CHECK(napi_set_element(env, arr, 1, b));
  return arr;
}

/* localCid() -> this machine's CID from /dev/vsock (IOCTL_VM_SOCKETS_GET_LOCAL_CID) | -errno */
static napi_value vsock_local_cid(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return int_value(env, -errno);
  unsigned int cid = 0;
  int r = ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
  int err = errno;
  close(fd);
  return int_value(env, r < 0 ? -err : (int64_t)cid);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"connect", NULL, handle_connect, NULL, NULL, NULL, napi_default_method, NULL},
      {"bind", NULL, handle_bind, NULL, NULL, NULL, napi_default_method, NULL},
      {"listen", NULL, handle_listen, NULL, NULL, NULL, napi_default_method, NULL},
      {"accept", NULL, handle_accept, NULL, NULL, NULL, napi_default_method, NULL},
      {"read", NULL, handle_read, NULL, NULL, NULL, napi_default_method, NULL},
      {"write", NULL, handle_write, NULL, NULL, NULL, napi_default_method, NULL},
      {"shutdown", NULL, handle_shutdown, NULL, NULL, NULL, napi_default_method, NULL},
      {"socketError", NULL, handle_socket_error, NULL, NULL, NULL, napi_default_method, NULL},
      {"sockname", NULL, handle_sockname, NULL, NULL, NULL, napi_default_method, NULL},
      {"peername", NULL, handle_peername, NULL, NULL, NULL, napi_default_method, NULL},
      {"poll", NULL, handle_poll, NULL, NULL, NULL, napi_default_method, NULL},
      {"ref", NULL, handle_ref, NULL, NULL, NULL, napi_default_method, NULL},
      {"unref", NULL, handle_unref, NULL, NULL, NULL, napi_default_method, NULL},
      {"close", NULL, handle_close, NULL, NULL, NULL, napi_default_method, NULL},
      {"fd", NULL, handle_fd, NULL, NULL, NULL, napi_default_method, NULL},
  };
  napi_value cls, fn, v;
  CHECK(napi_define_class(env, "Handle", NAPI_AUTO_LENGTH, handle_new, NULL, sizeof methods / sizeof methods[0], methods, &cls));
  CHECK(napi_set_named_property(env, exports, "Handle", cls));
  CHECK(napi_create_function(env, "socket", NAPI_AUTO_LENGTH, vsock_socket, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "socket", fn));
  CHECK(napi_create_function(env, "localCid", NAPI_AUTO_LENGTH, vsock_local_cid, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "localCid", fn));
  CHECK(napi_create_function(env, "_socketpair", NAPI_AUTO_LENGTH, vsock_socketpair, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "_socketpair", fn));
  CHECK(console_init(env, exports));
  const struct { const char *name; int64_t value; } constants[] = {
      {"AF_VSOCK", AF_VSOCK},
      {"VMADDR_CID_ANY", VMADDR_CID_ANY},
      {"VMADDR_CID_HYPERVISOR", VMADDR_CID_HYPERVISOR},
      {"VMADDR_CID_LOCAL", 1},
      {"VMADDR_CID_HOST", VMADDR_CID_HOST},
      {"VMADDR_PORT_ANY", VMADDR_PORT_ANY},
      {"UV_READABLE", UV_READABLE},
      {"UV_WRITABLE", UV_WRITABLE},
      {"EAGAIN", -EAGAIN},
      {"EINPROGRESS", -EINPROGRESS},
      {"EBADF", -EBADF},
  };
  for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++) {
    CHECK(napi_create_int64(env, constants[i].value, &v));
    CHECK(napi_set_named_property(env, exports, constants[i].name, v));
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
