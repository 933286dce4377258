// SPDX-License-Identifier: GPL-2.0
/*
 * xdphooks: `xdphooks trace --live`: the verdict of one component for every
 * real packet, from an fexit program on that component (the slot function
 * xdph_slot_<N> of a static root, or the EXT program of a freplace chain;
 * the target is set at run time). Attached only while tracing.
 *
 * The kernel hands a tracing program the XDP context as the kernel's own
 * struct xdp_buff (the BPF-side struct xdp_md is translated); only the two
 * fields read here are declared, CO-RE finds their offsets.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xdph_abi_trace.h"

struct xdp_buff {
	void *data;
	void *data_end;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} xdph_trace_ring SEC(".maps");

SEC("fexit")
int xdph_trace_exit(__u64 *ctx)
{
	struct xdp_buff *xdp = (struct xdp_buff *)ctx[0];
	struct xdph_trace_event *e;
	__u8 hdr[24] = {};
	void *data, *end;

	e = bpf_ringbuf_reserve(&xdph_trace_ring, sizeof(*e), 0);
	if (!e)
		return 0; /* ring full: userspace reports the loss from the packet counters */
	data = xdp->data;
	end = xdp->data_end;
	e->ts_ns = bpf_ktime_get_ns();
	e->retval = (__u32)ctx[1];
	e->len = (__u32)(end - data);
	e->cpu = bpf_get_smp_processor_id();
	e->proto = 0;
	e->l4proto = 0;
	e->pad = 0;
	if (e->len >= sizeof(hdr) && !bpf_probe_read_kernel(hdr, sizeof(hdr), data)) {
		e->proto = hdr[12] | (hdr[13] << 8);
		if (hdr[12] == 0x08 && hdr[13] == 0x00)
			e->l4proto = hdr[23]; /* IPv4 protocol */
		else if (hdr[12] == 0x86 && hdr[13] == 0xdd)
			e->l4proto = hdr[20]; /* IPv6 next header */
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char _license[] SEC("license") = "GPL";
