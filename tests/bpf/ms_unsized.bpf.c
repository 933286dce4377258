// Maps sized by the loader, as xdp-tools' xdp-bench declares them: no max_entries in
// the object; the plugin sets them with XdpProgram(maps=...). Counts packets by their
// length modulo 4 in ms_hits and remembers each length in ms_lens; passes everything.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
} ms_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
} ms_lens SEC(".maps");

SEC("xdp")
int ms_count(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	__u32 key = len & 3;
	__u64 one = 1, *v = bpf_map_lookup_elem(&ms_hits, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
	v = bpf_map_lookup_elem(&ms_lens, &len);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&ms_lens, &len, &one, BPF_NOEXIST);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
