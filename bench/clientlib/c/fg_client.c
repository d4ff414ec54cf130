/* Foreground round-trip load with libgearman: T client threads, each with its own
 * gearman_client_st (one connection), each doing N sequential gearman_client_do()
 * calls with a small payload and checking the answer is the payload reversed.
 *
 * usage: fg_client HOST PORT FUNCTION THREADS JOBS_PER_THREAD PAYLOAD_BYTES
 *                  [WARMUP_PER_THREAD] [TIMEOUT_MS] [unique|nounique]
 *
 * Prints one JSON line: {"lib":"c","jobs":..,"secs":..,"rate":..,"errors":..}.
 * Timing starts when every thread has connected and done its warm-up jobs (a
 * barrier) and ends when the last thread finishes. Exit status 1 on any error.
 */
#define _GNU_SOURCE
#include <libgearman/gearman.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *host, *function;
static in_port_t port;
static long jobs_per_thread, warmup;
static size_t payload;
static int timeout_ms = 30000;
static int generate_unique = 0;
static pthread_barrier_t start_barrier, end_barrier;

struct thread_arg {
  int id;
  long errors;
  char msg[256];
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One job; returns 0 if the answer is the reversed payload. */
static int one_job(gearman_client_st *client, const char *data, const char *want, struct thread_arg *a) {
  size_t size = 0;
  gearman_return_t rc;
  void *res = gearman_client_do(client, function, NULL, data, payload, &size, &rc);
  int bad = 0;
  if (rc != GEARMAN_SUCCESS) {
    snprintf(a->msg, sizeof a->msg, "gearman_client_do: %s", gearman_client_error(client));
    bad = 1;
  } else if (size != payload || (payload && (res == NULL || memcmp(res, want, payload) != 0))) {
    snprintf(a->msg, sizeof a->msg, "wrong answer (%zu bytes)", size);
    bad = 1;
  }
  free(res);
  return bad;
}

static void *run(void *p) {
  struct thread_arg *a = p;
  gearman_client_st *client = gearman_client_create(NULL);
  char *data = malloc(payload + 1), *want = malloc(payload + 1);
  int ok = client != NULL && data != NULL && want != NULL;
  if (ok) {
    if (!generate_unique) gearman_client_remove_options(client, GEARMAN_CLIENT_GENERATE_UNIQUE);
    else gearman_client_add_options(client, GEARMAN_CLIENT_GENERATE_UNIQUE);
    gearman_client_set_timeout(client, timeout_ms);
    if (gearman_client_add_server(client, host, port) != GEARMAN_SUCCESS) {
      snprintf(a->msg, sizeof a->msg, "add_server: %s", gearman_client_error(client));
      ok = 0;
    }
  }
  if (ok) {
    for (size_t i = 0; i < payload; i++) data[i] = (char)('a' + (a->id * 7 + (int)i) % 26);
    for (size_t i = 0; i < payload; i++) want[i] = data[payload - 1 - i];
    /* Connect, then warm up. */
    if (gearman_client_echo(client, "x", 1) != GEARMAN_SUCCESS) {
      snprintf(a->msg, sizeof a->msg, "echo: %s", gearman_client_error(client));
      ok = 0;
    }
    for (long i = 0; ok && i < warmup; i++)
      if (one_job(client, data, want, a)) ok = 0;
  }
  if (!ok) a->errors++;
  pthread_barrier_wait(&start_barrier);
  for (long i = 0; ok && i < jobs_per_thread; i++) {
    if (one_job(client, data, want, a)) {
      a->errors++;
      break;
    }
  }
  pthread_barrier_wait(&end_barrier);
  if (client) gearman_client_free(client);
  free(data);
  free(want);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: %s HOST PORT FUNCTION THREADS JOBS_PER_THREAD PAYLOAD [WARMUP] [TIMEOUT_MS] [unique|nounique]\n", argv[0]);
    return 2;
  }
  host = argv[1];
  port = (in_port_t)atoi(argv[2]);
  function = argv[3];
  int threads = atoi(argv[4]);
  jobs_per_thread = atol(argv[5]);
  payload = (size_t)atol(argv[6]);
  warmup = argc > 7 ? atol(argv[7]) : 100;
  if (argc > 8) timeout_ms = atoi(argv[8]);
  if (argc > 9) generate_unique = strcmp(argv[9], "unique") == 0;
  if (threads < 1) threads = 1;

  pthread_barrier_init(&start_barrier, NULL, (unsigned)threads + 1);
  pthread_barrier_init(&end_barrier, NULL, (unsigned)threads + 1);
  pthread_t *tids = calloc((size_t)threads, sizeof *tids);
  struct thread_arg *args = calloc((size_t)threads, sizeof *args);
  for (int i = 0; i < threads; i++) {
    args[i].id = i;
    if (pthread_create(&tids[i], NULL, run, &args[i]) != 0) {
      perror("pthread_create");
      return 1;
    }
  }
  pthread_barrier_wait(&start_barrier);
  double t0 = now();
  pthread_barrier_wait(&end_barrier);
  double t1 = now();
  long errors = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(tids[i], NULL);
    errors += args[i].errors;
    if (args[i].errors) fprintf(stderr, "thread %d: %s\n", i, args[i].msg);
  }
  long jobs = jobs_per_thread * threads;
  double secs = t1 - t0;
  printf("{\"lib\":\"c\",\"jobs\":%ld,\"secs\":%.6f,\"rate\":%.1f,\"errors\":%ld}\n", jobs, secs,
         secs > 0 ? (double)jobs / secs : 0.0, errors);
  return errors ? 1 : 0;
}
