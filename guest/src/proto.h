/*
 * Wire constants of the microagent guest protocol (docs/protocol.md is the specification; the
 * host's src/channel/frame.ts mirrors these numbers).
 */
#ifndef MA_PROTO_H
#define MA_PROTO_H

#define PROTO_VERSION 1
#define FRAME_HEADER_BYTES 12
/* Largest payload this init accepts (boot configs carry files); checked before anything is buffered. */
#define GUEST_MAX_FRAME_BYTES (4 * 1024 * 1024)
/* Per-stream receive window this init offers the host (stdin / console input it may have in flight). */
#define GUEST_WINDOW_BYTES (256 * 1024)
#define MAX_STREAMS 64

enum frame_type {
  F_HELLO = 1,   /* guest -> host, stream 0, JSON */
  F_WELCOME = 2, /* host -> guest, stream 0, JSON */
  F_OPEN = 3,    /* opener -> peer, new stream id, JSON open request */
  F_DATA = 4,    /* bytes on a channel of a stream; counts against the stream's window */
  F_EOF = 5,     /* no more DATA on that channel */
  F_CREDIT = 6,  /* payload: u32 BE bytes added to the sender's window for that stream */
  F_MSG = 7,     /* JSON message scoped to a stream (stream 0 = control) */
  F_CLOSE = 8,   /* the sender is done with the stream */
  F_GOAWAY = 9,  /* fatal protocol error, JSON {code, message}; the session ends */
};

enum channel { CH_IN = 0, CH_OUT = 1, CH_ERR = 2 };

#endif
