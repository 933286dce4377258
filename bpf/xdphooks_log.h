/* SPDX-License-Identifier: GPL-2.0 */
/* xdphooks: the `log` decision, one function shared by the static chain (the
 * generated root calls it from a slot's epilogue, see xdphooks/link/splice.py)
 * and the freplace dispatcher. The includer defines the ring `xdph_events`.
 *
 * Global and never inlined: the verifier checks it once, and the packets that do
 * not log pay nothing for it (a logging slot's epilogue holds one call, reached
 * only on the verdicts its policy logs). The packet is read with direct packet
 * access and a bounds check per byte, because that is what every kernel from 5.10
 * accepts: bpf_xdp_load_bytes() exists only from 5.18, and some kernels refuse
 * bpf_xdp_adjust_meta(). The copy is unrolled (constant offsets), which the oldest
 * verifiers need; its cost is paid on the event path only. */
#ifndef XDPHOOKS_LOG_H
#define XDPHOOKS_LOG_H

#include "xdphooks_config.h"

__attribute__((noinline)) int xdph_log(struct xdp_md *ctx, __u32 slot, __u32 ret)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct xdphooks_event *e;
	__u32 i;

	e = bpf_ringbuf_reserve(&xdph_events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->ts_ns = bpf_ktime_get_ns();
	e->slot = slot;
	e->retval = ret;
	e->ifindex = ctx->ingress_ifindex;
	e->flags = 0;
	e->pkt_len = (__u32)(end - data);
	/* the ring's memory is not cleared: no byte of an older record may show */
	__builtin_memset(e->pkt, 0, sizeof(e->pkt));
#pragma unroll
	for (i = 0; i < XDPHOOKS_EVENT_SNAPLEN; i++) {
		if (data + i + 1 > end)
			break;
		e->pkt[i] = ((__u8 *)data)[i];
	}
	e->cap_len = i;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

#endif /* XDPHOOKS_LOG_H */
