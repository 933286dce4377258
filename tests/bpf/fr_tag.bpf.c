// SPDX-License-Identifier: GPL-2.0-only
/* freplace test component: configurable verdict, writes its tag into the
 * packet (so tests see the run order) and counts packets in a map.
 *   cfg[0] = { verdict + 1 (0: XDP_PASS), tag }
 *   packet byte 0 = how many components ran; byte 1+n = n-th component's tag
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef FR_TAG_HITS
#define FR_TAG_HITS 1 /* fr_tag_v2 counts 1000: tells an upgrade apart */
#endif

struct fr_cfg {
	__u32 verdict_plus1;
	__u32 tag;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fr_cfg);
} fr_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fr_hits SEC(".maps");

SEC("xdp")
int fr_tag(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *p = data;
	__u32 zero = 0;
	struct fr_cfg *cfg = bpf_map_lookup_elem(&fr_cfg, &zero);
	__u64 *hits = bpf_map_lookup_elem(&fr_hits, &zero);
	__u32 n;

	if (hits)
		__sync_fetch_and_add(hits, FR_TAG_HITS);
	if (p + 1 <= (__u8 *)end && cfg) {
		__u8 *slot;

		n = p[0] & 0x7f;
		slot = p + 1 + n;
		if (slot + 1 <= (__u8 *)end) {
			*slot = (__u8)cfg->tag;
			p[0] = n + 1;
		}
	}
	if (cfg && cfg->verdict_plus1)
		return cfg->verdict_plus1 - 1;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
