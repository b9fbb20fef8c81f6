/*
 * hull-ctty: makes the terminal on stdin the controlling terminal of the calling process, then executes a program.
 * The agent runs it as the first step of a process on a pty it opened itself, in the guest's devpts (Terminal.open).
 * A container's terminal does not need it: crun opens the pty inside the container, makes it the controlling
 * terminal and passes the master on through --console-socket. See agent/terminal.ts for the whole design.
 *
 * Usage: hull-ctty PROGRAM [ARGS...]   (PROGRAM is looked up in PATH, as execvp does)
 *
 * The agent's crun config runs it as /proc/self/fd/3 (crun --preserve-fds=2), so that nothing has to be mounted in
 * the container:
 *   fd 0    the pty's slave (also fds 1 and 2)
 *   fd 3    this program, opened read-only by the agent: closed here
 *   fd 4    exec status channel: made close-on-exec, so that the agent reads end of file once PROGRAM has been
 *           executed; on failure one line "<what>: <error>" is written to it before exiting
 * Without fds 3 and 4 (tests) it works the same; the failure line then goes to stderr only.
 *
 * Steps: setsid() (a container's init is already a session leader: EPERM is fine), ioctl(0, TIOCSCTTY, 0), which
 * also makes this process group the terminal's foreground group, so ^C and window-size changes (SIGWINCH) reach
 * the program from the kernel, and execvp(). The process keeps its pid: exit statuses are the program's.
 *
 * Exit status when PROGRAM cannot run: 127 when it is not found, 126 otherwise (as a shell reports it); nothing is
 * printed on the normal path.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define SELF_FD 3
#define STATUS_FD 4

static void put(int fd, const char *s) {
  size_t len = strlen(s);
  while (len > 0) {
    ssize_t n = write(fd, s, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    s += n;
    len -= (size_t)n;
  }
}

/* Reports "<what>: <error>" on the status channel and on stderr (the terminal), and exits. */
static void fail(const char *what, const char *arg, int err) {
  char line[512];
  line[0] = '\0';
  strncat(line, what, 120);
  if (arg) {
    strncat(line, " ", 2);
    strncat(line, arg, 256);
  }
  strncat(line, ": ", 3);
  strncat(line, strerror(err), 100);
  put(STATUS_FD, line);
  put(2, "hull-ctty: ");
  put(2, line);
  put(2, "\n");
  _exit(err == ENOENT ? 127 : 126);
}

int main(int argc, char **argv) {
  if (argc < 2) fail("usage: hull-ctty PROGRAM [ARGS...]", NULL, EINVAL);
  close(SELF_FD);
  int flags = fcntl(STATUS_FD, F_GETFD);
  if (flags >= 0) fcntl(STATUS_FD, F_SETFD, flags | FD_CLOEXEC);
  if (setsid() < 0 && errno != EPERM) fail("setsid", NULL, errno);
  if (ioctl(0, TIOCSCTTY, 0) < 0) fail("make stdin the controlling terminal", NULL, errno);
  execvp(argv[1], argv + 1);
  fail("exec", argv[1], errno);
  return 126;
}
