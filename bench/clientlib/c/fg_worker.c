/* A libgearman worker that answers every job of FUNCTION with its workload reversed,
 * looping on gearman_worker_work() until killed (SIGTERM) or an error.
 *
 * usage: fg_worker HOST PORT FUNCTION
 */
#include <libgearman/gearman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *reverse(gearman_job_st *job, void *context, size_t *result_size, gearman_return_t *ret) {
  (void)context;
  const char *in = gearman_job_workload(job);
  size_t n = gearman_job_workload_size(job);
  char *out = malloc(n ? n : 1);
  if (out == NULL) {
    *ret = GEARMAN_WORK_FAIL;
    return NULL;
  }
  for (size_t i = 0; i < n; i++) out[i] = in[n - 1 - i];
  *result_size = n;
  *ret = GEARMAN_SUCCESS;
  return out; /* freed by libgearman */
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s HOST PORT FUNCTION\n", argv[0]);
    return 2;
  }
  gearman_worker_st *w = gearman_worker_create(NULL);
  if (w == NULL) return 1;
  if (gearman_worker_add_server(w, argv[1], (in_port_t)atoi(argv[2])) != GEARMAN_SUCCESS ||
      gearman_worker_add_function(w, argv[3], 0, reverse, NULL) != GEARMAN_SUCCESS) {
    fprintf(stderr, "fg_worker: %s\n", gearman_worker_error(w));
    return 1;
  }
  for (;;) {
    gearman_return_t rc = gearman_worker_work(w);
    if (rc != GEARMAN_SUCCESS) {
      fprintf(stderr, "fg_worker: %s\n", gearman_worker_error(w));
      gearman_worker_free(w);
      return 1;
    }
  }
}
