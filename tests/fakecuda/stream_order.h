/* The fake CUDA driver's model of which device work is ordered before which
 * (tests only): vector clocks over the streams, and the last operation that
 * touched each device address.
 *
 * Every operation on a stream gets a sequence number; a stream's clock holds,
 * per stream, the newest operation known to be finished before the stream's
 * next one: its own last operation, what the events it waited for had
 * recorded (cuStreamWaitEvent), and what the host had waited for
 * (cuStreamSynchronize, cuEventSynchronize, cuCtxSynchronize) when the
 * operation was queued.  An operation that touches an address (a kernel's
 * pointer argument, a copy's or memset's start, a collective's buffer) must
 * be ordered after the last operation that touched it on another stream;
 * else it is a race on a real GPU, and so_touch says so.  Addresses are
 * compared by their start: the executor passes every buffer by its start. */
#ifndef FAKE_STREAM_ORDER_H
#define FAKE_STREAM_ORDER_H

#include <stddef.h>
#include <stdint.h>

#define SO_STREAMS 64 /* stream 0 is the legacy stream */

typedef struct {
    unsigned long long c[SO_STREAMS];
} so_clock;

typedef struct {
    uintptr_t ptr; /* 0: empty */
    int stream;
    unsigned long long seq;
    char what[48];
} so_last;

typedef struct {
    unsigned long long seq;
    so_clock stream[SO_STREAMS];
    unsigned char used[SO_STREAMS];
    unsigned char blocking[SO_STREAMS]; /* synchronizes with the legacy stream (created without NON_BLOCKING) */
    so_clock host;
    so_last *last; /* open addressing by ptr */
    size_t cap, n;
} so_state;

/* A new stream's id (1..SO_STREAMS-1), or -1 when all are taken (its work is then not followed).
 * blocking: the legacy stream's work waits for its earlier work and its later work for the legacy
 * stream's, as the real driver orders a stream created without CU_STREAM_NON_BLOCKING. */
int so_stream_new(so_state *s, int blocking);
/* A stream destroyed: its work is finished (the driver waits for it). */
void so_stream_free(so_state *s, int id);
/* A new operation on stream id (-1: not followed; returns 0). */
unsigned long long so_op(so_state *s, int id);
/* Operation seq of stream id touches ptr, named what: 0, or -1 with why in msg. */
int so_touch(so_state *s, int id, unsigned long long seq, uintptr_t ptr, const char *what, char *msg, size_t size);
/* cuEventRecord: the event's clock ← the stream's; cuStreamWaitEvent: the stream's ← max(its own, the event's). */
void so_record(const so_state *s, int id, so_clock *event);
void so_wait(so_state *s, int id, const so_clock *event);
/* The host waited for a stream, an event, or everything. */
void so_host_waits(so_state *s, int id);
void so_host_waits_event(so_state *s, const so_clock *event);
void so_host_waits_all(so_state *s);
void so_free(so_state *s);

#endif
