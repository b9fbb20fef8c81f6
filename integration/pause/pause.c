/*
 * hull's pause: the process a pod sandbox's infrastructure container runs. It holds the pod's namespaces open
 * by doing nothing, reaps any child re-parented to it (it is PID 1 of the pod's PID namespace when one is shared),
 * and exits 0 on SIGINT or SIGTERM. Built static by integration/lib/containerd.ts for the test image.
 */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop = {0};
  stop.sa_handler = on_stop;
  sigemptyset(&stop.sa_mask);
  if (sigaction(SIGINT, &stop, NULL) != 0 || sigaction(SIGTERM, &stop, NULL) != 0) return 1;

  struct sigaction child = {0};
  child.sa_handler = on_child;
  child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  sigemptyset(&child.sa_mask);
  if (sigaction(SIGCHLD, &child, NULL) != 0) return 1;

  for (;;) pause();
}
