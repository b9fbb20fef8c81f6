/*
 * The console socket of an OCI runtime (runc's and crun's `--console-socket <path>`): the runtime opens the pty
 * inside the container's devpts and sends its master over an AF_UNIX stream socket as SCM_RIGHTS (crun with one
 * byte of data, runc with the pty's name). Node can neither receive a file descriptor nor set a terminal's size,
 * so these three calls are here, in the addon the agent already loads. As in vsock.c, each returns a result >= 0
 * or -errno and never throws for a system error; JavaScript (console.ts) names the errors.
 *
 * What arrives is checked: exactly one descriptor, and it must be a pty master (TIOCGPTN answers only on a
 * master). Anything else that came with it is closed, so nothing a sender passes stays open in the agent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <node_api.h>

#include "console.h"

/* Descriptors received at most in one message; more than one is refused, these are only to close strays. */
#define MAX_FDS 8
/* The data that comes with the descriptor: crun sends one byte, runc the pty's name (a path). */
#define MAX_DATA 4096

static bool arg_count(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "hull-vsock console: missing arguments");
    return false;
  }
  return true;
}

static bool arg_int(napi_env env, napi_value v, const char *what, int64_t min, int64_t max, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != d || d < (double)min || d > (double)max ||
      (double)(int64_t)d != d) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be an integer in [%lld, %lld]", what, (long long)min, (long long)max);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

static napi_value result(napi_env env, int64_t n) {
  napi_value v;
  if (napi_create_int64(env, n, &v) != napi_ok) return NULL;
  return v;
}

/* consoleListen(path) -> a non-blocking, close-on-exec AF_UNIX stream socket listening on `path` | -errno */
static napi_value console_listen(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!arg_count(env, info, 1, argv)) return NULL;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[0], addr.sun_path, sizeof addr.sun_path, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "the console socket's path must be a string");
    return NULL;
  }
  /* Filled to the last byte means it was cut (the string is always terminated): too long for sun_path. */
  if (len == 0 || len >= sizeof addr.sun_path - 1 || strlen(addr.sun_path) != len) return result(env, -ENAMETOOLONG);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return result(env, -errno);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 1) < 0) {
    int err = errno;
    close(fd);
    return result(env, -err);
  }
  return result(env, fd);
}

/*
 * consoleReceive(listenFd) -> [master fd, pty number] | -errno. Accepts the one pending connection and reads
 * its message without waiting: the runtime has sent it and exited by the time this is called, so -EAGAIN means
 * nothing was sent. The master comes back close-on-exec and non-blocking. -EPROTO: no descriptor, or more than
 * one; -ENOTTY: not a pty master.
 */
static napi_value console_receive(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t listen_fd;
  if (!arg_count(env, info, 1, argv) || !arg_int(env, argv[0], "fd", 0, INT32_MAX, &listen_fd)) return NULL;
  int conn = accept4((int)listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (conn < 0) return result(env, -errno);

  char data[MAX_DATA];
  struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  ssize_t n = recvmsg(conn, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  int err = errno;
  close(conn);
  if (n < 0) return result(env, -err);

  int fds[MAX_FDS];
  size_t count = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (count < MAX_FDS) fds[count++] = fd;
      else close(fd);
    }
  }
  /* MSG_CTRUNC: the kernel dropped (and closed) what did not fit; that is more than one as well. */
  if (count != 1 || (msg.msg_flags & MSG_CTRUNC)) {
    for (size_t i = 0; i < count; i++) close(fds[i]);
    return result(env, -EPROTO);
  }
  int master = fds[0];
  unsigned int ptn = 0;
  if (ioctl(master, TIOCGPTN, &ptn) < 0) {
    close(master);
    return result(env, -ENOTTY);
  }
  int flags = fcntl(master, F_GETFL);
  if (flags < 0 || fcntl(master, F_SETFL, flags | O_NONBLOCK) < 0) {
    err = errno;
    close(master);
    return result(env, -err);
  }
  napi_value arr, a, b;
  if (napi_create_array_with_length(env, 2, &arr) != napi_ok || napi_create_int32(env, master, &a) != napi_ok ||
      napi_create_uint32(env, ptn, &b) != napi_ok || napi_set_element(env, arr, 0, a) != napi_ok ||
      napi_set_element(env, arr, 1, b) != napi_ok) {
    close(master);
    return NULL;
  }
  return arr;
}

/* setWinsize(fd, rows, cols) -> 0 | -errno: TIOCSWINSZ (the kernel sends SIGWINCH to the foreground group). */
static napi_value console_set_winsize(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int64_t fd, rows, cols;
  if (!arg_count(env, info, 3, argv) || !arg_int(env, argv[0], "fd", 0, INT32_MAX, &fd) ||
      !arg_int(env, argv[1], "rows", 0, UINT16_MAX, &rows) || !arg_int(env, argv[2], "cols", 0, UINT16_MAX, &cols))
    return NULL;
  struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
  return result(env, ioctl((int)fd, TIOCSWINSZ, &ws) < 0 ? -errno : 0);
}

/* getWinsize(fd) -> [rows, cols] | -errno (TIOCGWINSZ; for tests and checks). */
static napi_value console_get_winsize(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t fd;
  if (!arg_count(env, info, 1, argv) || !arg_int(env, argv[0], "fd", 0, INT32_MAX, &fd)) return NULL;
  struct winsize ws;
  if (ioctl((int)fd, TIOCGWINSZ, &ws) < 0) return result(env, -errno);
  napi_value arr, a, b;
  if (napi_create_array_with_length(env, 2, &arr) != napi_ok || napi_create_uint32(env, ws.ws_row, &a) != napi_ok ||
      napi_create_uint32(env, ws.ws_col, &b) != napi_ok || napi_set_element(env, arr, 0, a) != napi_ok ||
      napi_set_element(env, arr, 1, b) != napi_ok)
    return NULL;
  return arr;
}

/*
 * setPipeSize(fd, bytes) -> the pipe's new capacity | -errno: F_SETPIPE_SZ (the kernel rounds up to a power of two
 * pages; an unprivileged caller is capped by /proc/sys/fs/pipe-max-size). Not about consoles either: the agent's
 * stdio pipes, whose 64 KiB default makes a bulk writer and the agent take turns every 64 KiB.
 */
static napi_value console_set_pipe_size(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t fd, bytes;
  if (!arg_count(env, info, 2, argv) || !arg_int(env, argv[0], "fd", 0, INT32_MAX, &fd) ||
      !arg_int(env, argv[1], "bytes", 4096, 1 << 30, &bytes))
    return NULL;
  int r = fcntl((int)fd, F_SETPIPE_SZ, (int)bytes);
  return result(env, r < 0 ? -errno : r);
}

/*
 * pipe() -> [read fd, write fd] | -errno: pipe2(O_CLOEXEC), both ends blocking (node's net.Socket makes the read end
 * non-blocking when it adopts it; the write end goes to a child as its stdout). node's own stdio 'pipe' is an AF_UNIX
 * socket pair, whose every write wakes the reader; a pipe wakes it only when it was empty, and its size can be set.
 */
static napi_value console_pipe(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  if (napi_get_cb_info(env, info, &argc, NULL, NULL, NULL) != napi_ok) return NULL;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return result(env, -errno);
  napi_value arr, a, b;
  if (napi_create_array_with_length(env, 2, &arr) != napi_ok || napi_create_int32(env, fds[0], &a) != napi_ok ||
      napi_create_int32(env, fds[1], &b) != napi_ok || napi_set_element(env, arr, 0, a) != napi_ok ||
      napi_set_element(env, arr, 1, b) != napi_ok) {
    close(fds[0]);
    close(fds[1]);
    return NULL;
  }
  return arr;
}

/*
 * _sendFds(path, [fd, ...]) -> 0 | -errno: connects to `path` and sends the descriptors (any number, none
 * included) with one byte, as crun does. For tests only: node cannot send a descriptor by itself.
 */
static napi_value console_send_fds(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!arg_count(env, info, 2, argv)) return NULL;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[0], addr.sun_path, sizeof addr.sun_path, &len) != napi_ok) return NULL;
  uint32_t count = 0;
  if (napi_get_array_length(env, argv[1], &count) != napi_ok || count > MAX_FDS * 2) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "_sendFds: an array of at most 16 descriptors");
    return NULL;
  }
  int fds[MAX_FDS * 2];
  for (uint32_t i = 0; i < count; i++) {
    napi_value v;
    int64_t fd;
    if (napi_get_element(env, argv[1], i, &v) != napi_ok || !arg_int(env, v, "fd", 0, INT32_MAX, &fd)) return NULL;
    fds[i] = (int)fd;
  }
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return result(env, -errno);
  if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int err = errno;
    close(sock);
    return result(env, -err);
  }
  char byte = ' ';
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS * 2)];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (count > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * count);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * count);
  }
  ssize_t n = sendmsg(sock, &msg, 0);
  int err = errno;
  close(sock);
  return result(env, n < 0 ? -err : 0);
}

napi_status console_init(napi_env env, napi_value exports) {
  const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
      {"consoleListen", console_listen},
      {"consoleReceive", console_receive},
      {"setWinsize", console_set_winsize},
      {"getWinsize", console_get_winsize},
      {"setPipeSize", console_set_pipe_size},
      {"pipe", console_pipe},
      {"_sendFds", console_send_fds},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    napi_status s = napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn);
    if (s == napi_ok) s = napi_set_named_property(env, exports, fns[i].name, fn);
    if (s != napi_ok) return s;
  }
  return napi_ok;
}
