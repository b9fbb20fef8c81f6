/*
 * hull-reseed: gives the kernel's random pool fresh seed bytes and makes the CRNG reseed from it now. The agent
 * runs it for ReseedRandomDev, which the host sends to a VM cloned from a template (core/template.ts): every clone
 * starts with the template's pool and CRNG key, so without this two clones would read the same /dev/urandom bytes
 * until the kernel's next scheduled reseed (up to a minute away). Node has no ioctl, hence this program.
 *
 * Usage: hull-reseed < SEED   (1 to 512 bytes of the host's random bytes on stdin)
 *
 * Steps: RNDADDENTROPY with the seed (credited as 8 bits per byte: it comes from the host's CSPRNG over the agent's
 * channel), then RNDRESEEDCRNG, so that the next read of /dev/urandom or getrandom() already uses a key derived from
 * it. Both need CAP_SYS_ADMIN (the agent is root). Exit status 0, or 1 with one line on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define MAX_SEED 512

static int fail(const char *what) {
  fprintf(stderr, "hull-reseed: %s: %s\n", what, strerror(errno));
  return 1;
}

int main(void) {
  struct {
    struct rand_pool_info info;
    unsigned char buf[MAX_SEED];
  } seed;
  size_t len = 0;
  while (len < MAX_SEED) {
    ssize_t n = read(0, seed.buf + len, MAX_SEED - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("read the seed");
    if (n == 0) break;
    len += (size_t)n;
  }
  if (len == 0) {
    errno = EINVAL;
    return fail("no seed on stdin");
  }
  int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
  if (fd < 0) return fail("open /dev/urandom");
  seed.info.entropy_count = (int)(len * 8);
  seed.info.buf_size = (int)len;
  if (ioctl(fd, RNDADDENTROPY, &seed.info) < 0) return fail("RNDADDENTROPY");
  if (ioctl(fd, RNDRESEEDCRNG) < 0) return fail("RNDRESEEDCRNG");
  close(fd);
  return 0;
}
