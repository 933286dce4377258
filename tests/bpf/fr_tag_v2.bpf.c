/* freplace test component, version 2: same maps and behaviour as fr_tag,
 * but counts 1000 per packet, so a test can tell the upgraded program apart. */
#define FR_TAG_HITS 1000
#include "fr_tag.bpf.c"
