/* Exact counts on a zero-anchored grid: value x falls in bin floor(x / width) - k0.
 *
 * width is a power of two, so x * inv_width is exact in float and floorf gives the true bin
 * (torch.histc divides by the range per value instead). Work goes in blocks that stay in L1: a
 * first loop, which the compiler vectorizes, turns values into bin indices; a second one counts
 * them into eight interleaved sub-histograms so that repeated increments of one bin (the zeros
 * after a ReLU) do not wait on each other. Indices outside the window are clamped to its first or
 * last bin; the caller sizes the window to cover every finite value.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define WAYS 8
#define BLOCK 512

int zero_anchored_hist(const float *x, int64_t n, float inv_width, int64_t k0, int64_t nbins, int64_t *counts) {
    int32_t *sub = calloc((size_t)(WAYS * nbins), sizeof(int32_t));
    if (!sub) return -1;
    int32_t idx[BLOCK];
    const int32_t base = (int32_t)k0, top = (int32_t)(nbins - 1);
    int64_t since_flush = 0;
    for (int64_t s = 0; s < n; s += BLOCK) {
        int m = (int)(n - s < BLOCK ? n - s : BLOCK);
        const float *xb = x + s;
        for (int i = 0; i < m; i++) {
            int32_t b = (int32_t)floorf(xb[i] * inv_width) - base;
            idx[i] = b < 0 ? 0 : (b > top ? top : b);
        }
        int i = 0;
        for (; i + WAYS <= m; i += WAYS)
            for (int j = 0; j < WAYS; j++) sub[j * nbins + idx[i + j]]++;
        for (; i < m; i++) sub[idx[i]]++;
        since_flush += m;
        if (since_flush > ((int64_t)1 << 30)) { /* int32 sub-counts: flush long before they could overflow */
            for (int64_t b = 0; b < WAYS * nbins; b++) { counts[b % nbins] += sub[b]; sub[b] = 0; }
            since_flush = 0;
        }
    }
    for (int64_t b = 0; b < WAYS * nbins; b++) counts[b % nbins] += sub[b];
    free(sub);
    return 0;
}
