/*
 * hull-netns (Node-API, C): two things node's net module cannot do.
 *
 * listenTcp(nsPath, address, port, backlog): a listening TCP socket that belongs to another network namespace.
 * A socket lives in the namespace of the thread that created it, so a short-lived thread joins the namespace
 * (setns), makes, binds and listens, and exits; the calling thread never changes namespace. The fd is returned to
 * JavaScript, which hands it to net.Server#listen({ fd }).
 *
 * originalDestination(fd): where a connection was going before netfilter's REDIRECT/DNAT changed it
 * (SO_ORIGINAL_DST, or IP6T_SO_ORIGINAL_DST for IPv6), from conntrack.
 *
 * Every function returns a result or a negative errno (never throws for a system error): JavaScript names them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <node_api.h>

/* linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h; spelled out to avoid their header clashes. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

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
    napi_throw_error(env, NULL, info && info->error_message ? info->error_message : "hull-netns: Node-API call failed");
  }
  return NULL;
}

static napi_value int_value(napi_env env, int v) {
  napi_value out;
  CHECK(napi_create_int32(env, v, &out));
  return out;
}

typedef struct {
  int nsfd;
  struct sockaddr_storage addr;
  socklen_t addrlen;
  int backlog;
  int result;
} listen_job;

static void *listen_in_namespace(void *arg) {
  listen_job *job = arg;
  if (setns(job->nsfd, CLONE_NEWNET) != 0) {
    job->result = -errno;
    return NULL;
  }
  int fd = socket(job->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    job->result = -errno;
    return NULL;
  }
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 || bind(fd, (struct sockaddr *)&job->addr, job->addrlen) != 0 ||
      listen(fd, job->backlog) != 0) {
    int err = errno;
    close(fd);
    job->result = -err;
    return NULL;
  }
  job->result = fd;
  return NULL;
}

/* listenTcp(nsPath: string, address: string, port: number, backlog: number): fd or -errno. */
static napi_value ListenTcp(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 4) {
    napi_throw_type_error(env, NULL, "listenTcp(nsPath, address, port, backlog)");
    return NULL;
  }
  char ns_path[4096];
  char address[INET6_ADDRSTRLEN];
  size_t len = 0;
  uint32_t port = 0;
  int32_t backlog = 0;
  CHECK(napi_get_value_string_utf8(env, argv[0], ns_path, sizeof ns_path, &len));
  if (len == 0 || len >= sizeof ns_path - 1 || strlen(ns_path) != len) return int_value(env, -EINVAL);
  CHECK(napi_get_value_string_utf8(env, argv[1], address, sizeof address, &len));
  if (strlen(address) != len) return int_value(env, -EINVAL);
  CHECK(napi_get_value_uint32(env, argv[2], &port));
  CHECK(napi_get_value_int32(env, argv[3], &backlog));
  if (port > 65535 || backlog < 1) return int_value(env, -EINVAL);

  listen_job job;
  memset(&job, 0, sizeof job);
  job.backlog = backlog;
  struct sockaddr_in *v4 = (struct sockaddr_in *)&job.addr;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&job.addr;
  if (inet_pton(AF_INET, address, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    job.addrlen = sizeof *v4;
  } else if (inet_pton(AF_INET6, address, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    job.addrlen = sizeof *v6;
  } else {
    return int_value(env, -EINVAL);
  }

  job.nsfd = open(ns_path, O_RDONLY | O_CLOEXEC);
  if (job.nsfd < 0) return int_value(env, -errno);
  pthread_t thread;
  int err = pthread_create(&thread, NULL, listen_in_namespace, &job);
  if (err == 0) err = pthread_join(thread, NULL);
  close(job.nsfd);
  return int_value(env, err != 0 ? -err : job.result);
}

/* originalDestination(fd: number): [family (4|6), address, port], or -errno (ENOENT: no conntrack entry). */
static napi_value OriginalDestination(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd = -1;
  if (argc != 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "originalDestination(fd)");
    return NULL;
  }
  struct sockaddr_storage local;
  socklen_t len = sizeof local;
  if (getsockname(fd, (struct sockaddr *)&local, &len) != 0) return int_value(env, -errno);

  struct sockaddr_storage dst;
  memset(&dst, 0, sizeof dst);
  len = sizeof dst;
  int family = 0;
  if (local.ss_family == AF_INET) {
    family = 4;
    len = sizeof(struct sockaddr_in);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &len) != 0) return int_value(env, -errno);
  } else if (local.ss_family == AF_INET6) {
    family = 6;
    len = sizeof(struct sockaddr_in6);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &len) != 0) return int_value(env, -errno);
  } else {
    return int_value(env, -EAFNOSUPPORT);
  }

  char text[INET6_ADDRSTRLEN];
  uint16_t port;
  if (family == 4) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)&dst;
    if (!inet_ntop(AF_INET, &a->sin_addr, text, sizeof text)) return int_value(env, -errno);
    port = ntohs(a->sin_port);
  } else {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&dst;
    if (!inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text)) return int_value(env, -errno);
    port = ntohs(a->sin6_port);
  }
  napi_value out, v;
  CHECK(napi_create_array_with_length(env, 3, &out));
  CHECK(napi_create_int32(env, family, &v));
  CHECK(napi_set_element(env, out, 0, v));
  CHECK(napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v));
  CHECK(napi_set_element(env, out, 1, v));
  CHECK(napi_create_uint32(env, port, &v));
  CHECK(napi_set_element(env, out, 2, v));
  return out;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"listenTcp", NULL, ListenTcp, NULL, NULL, NULL, napi_enumerable, NULL},
      {"originalDestination", NULL, OriginalDestination, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
