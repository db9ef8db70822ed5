// Attention of a few query rows over a KV cache: a decode step (1 row) and a speculative verification
// (a handful of rows under a causal mask). fp32 with AVX-512F or AVX2; bf16 products with fp32 sums with
// AVX512-BF16 or AMX-BF16. Built and loaded by kernels/cpu_attention.py, whose float64 torch reference
// defines what this computes.
//
// Why not SDPA: its CPU kernel blocks the work by the number of query rows, so row i of an 8-row
// pass and the same row computed alone differ in the last bits, and int8-rounded activations
// downstream can turn that into a different token. Here every (query row, head) goes through the
// same operations in the same order whatever else is in the batch (key blocks start at absolute
// positions; no sum mixes rows), so a row's output is the same bits alone or in any pass. A key
// head's keys and values are read once for all of its query heads and rows, a block at a time, and
// each block's loads are shared by three (row, head) pairs at once (BENCHMARKS.md has the speeds).
//
// Layout: q[Q][H][D] (the projections as they come out of the linear layer), H = Hkv * rep, query
// head h uses key head h / rep; k, v: [Hkv][S][D] with a row stride of D and a head stride of
// `head_stride` floats (a prefix of a larger reserved buffer); lengths[i] = keys row i sees (a
// prefix); out[Q][H][D].

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "amx_tiles.h"

// Keys the longest of `rows` query rows sees.
static inline int64_t longest_length(const int64_t *lengths, int64_t rows) {
  int64_t longest = 0;
  for (int64_t i = 0; i < rows; i++) longest = lengths[i] > longest ? lengths[i] : longest;
  return longest;
}

// scaled[i * rep + r] = q's row i, head r (of this key head's group), times scale: [rows * rep][D].
static inline void scale_queries(const float *q, int64_t rows, int64_t H, int64_t rep, int64_t D, float scale,
                                 float *scaled) {
  for (int64_t i = 0; i < rows; i++)
    for (int64_t r = 0; r < rep; r++)
      for (int64_t d = 0; d < D; d++) scaled[(i * rep + r) * D + d] = q[i * H * D + r * D + d] * scale;
}

#define BLOCK 16  // keys per sweep step (K and V blocks stay in L1); block starts are absolute, so every row steps alike

// A decode step reads each layer's keys and values from DRAM once; the hardware prefetcher alone kept
// that at 6-7 GB/s here. Asking for the block AHEAD blocks on speeds up a 28-layer sweep of one row.
#define AHEAD 2
static inline __attribute__((always_inline)) void prefetch_block(const float *rows, int64_t D, int64_t b0, int64_t longest) {
  if (b0 >= longest) return;
  const int64_t end = (b0 + BLOCK < longest ? b0 + BLOCK : longest) * D;
  for (int64_t at = b0 * D; at < end; at += 16) _mm_prefetch((const char *)(rows + at), _MM_HINT_T0);
}


// The (row, head) pairs of one group at the key block starting at b0: returns g, the group holds pairs
// [h0, h0 + g). Slots past g repeat pair h0, so whatever they load stays in bounds. n[u] = keys of the
// block the slot's pair sees (at most BLOCK; <= 0 once its row's keys have ended); *most / *least over
// the g real pairs.
#define GROUP3 3  // pairs that share each key and value load
static inline __attribute__((always_inline)) int group_at(int64_t h0, int64_t pairs, int64_t rep, const int64_t *lengths,
                                                          int64_t b0, int64_t pair[GROUP3], int64_t n[GROUP3],
                                                          int64_t *most, int64_t *least) {
  const int g = pairs - h0 < GROUP3 ? (int)(pairs - h0) : GROUP3;
  *most = 0, *least = BLOCK;
  for (int u = 0; u < GROUP3; u++) {
    const int64_t h = u < g ? h0 + u : h0, left = lengths[h / rep] - b0;
    pair[u] = h;
    n[u] = left < BLOCK ? left : BLOCK;
    if (u < g && n[u] > *most) *most = n[u];
    if (u < g && n[u] < *least) *least = n[u];
  }
  return g;
}

#pragma GCC push_options
#pragma GCC target("avx512f,fma")
#define MAX_REP 8
#define MAX_CHUNKS 16  // D up to 256

// e^x for x <= 0, 16 lanes: x = n ln2 + r, |r| <= ln2 / 2, e^r by Cephes' degree-6 polynomial,
// times 2^n (scalef); about 2 ulp, and 0 below -87.
static inline __attribute__((always_inline)) __m512 exp_nonpositive(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.0f);
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  x = _mm512_max_ps(x, lo);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_mov_ps((__mmask16)~underflow, _mm512_scalef_ps(p, n));
}

// v[j] = sum of acc[j]'s 16 lanes, for 16 vectors at once (45 instructions where 16 separate
// reductions take 128); the additions happen in one fixed order.
static inline __attribute__((always_inline)) __m512 sum_lanes_16(const __m512 acc[16]) {
  __m512 pairs[8], quads[4];
  for (int k = 0; k < 8; k++)
    pairs[k] = _mm512_add_ps(_mm512_unpacklo_ps(acc[2 * k], acc[2 * k + 1]), _mm512_unpackhi_ps(acc[2 * k], acc[2 * k + 1]));
  for (int k = 0; k < 4; k++) {
    const __m512d a = _mm512_castps_pd(pairs[2 * k]), b = _mm512_castps_pd(pairs[2 * k + 1]);
    quads[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  const __m512 lo = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], 0x88), _mm512_shuffle_f32x4(quads[0], quads[1], 0xDD));
  const __m512 hi = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], 0x88), _mm512_shuffle_f32x4(quads[2], quads[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(lo, hi, 0x88), _mm512_shuffle_f32x4(lo, hi, 0xDD));
}

// out[i][r] = acc[i][r] / total[i][r] for each (row i, head r): the softmax's division, made once per
// output element after the weighted values are summed. D: a multiple of 16.
static inline __attribute__((always_inline)) void divide_by_totals_512(const float *acc, const float *total, int64_t rows,
                                                                       int64_t H, int64_t rep, int64_t D, float *out) {
  for (int64_t i = 0; i < rows; i++)
    for (int64_t r = 0; r < rep; r++)
      for (int64_t d = 0; d < D; d += 16)
        _mm512_storeu_ps(out + i * H * D + r * D + d,
                         _mm512_div_ps(_mm512_loadu_ps(acc + (i * rep + r) * D + d), _mm512_set1_ps(total[i * rep + r])));
}

// Scaled query heads sharing each key load: three heads times eight keys keep 24 accumulators in
// flight, and a chunk of a key is loaded once for all three (one head alone loaded it per FMA).
#define KEYS8 8

// The end of a block in a scores sweep, for a group of pairs: the scores of keys [b0, b0 + 16) each pair
// sees (lane sums of `dot`), -inf past its keys; a pair whose keys ended in an earlier block stores nothing.
static inline __attribute__((always_inline)) void store_block_scores(__m512 dot[GROUP3][BLOCK], int g, const int64_t n[GROUP3],
                                                                     int64_t h0, int64_t stride, int64_t b0, float *scores) {
  for (int u = 0; u < g; u++) {
    if (n[u] <= 0) continue;
    const __mmask16 lanes = n[u] >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n[u]) - 1u);
    _mm512_storeu_ps(scores + (h0 + u) * stride + b0, _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), lanes, sum_lanes_16(dot[u])));
  }
}

// dot[u][j0 .. j0 + 7] = 0 for every slot: keys past the longest row's, which no row sees.
static inline __attribute__((always_inline)) void zero_keys8(__m512 dot[GROUP3][BLOCK], int j0) {
  for (int u = 0; u < GROUP3; u++)
    for (int j = 0; j < KEYS8; j++) dot[u][j0 + j] = _mm512_setzero_ps();
}

// dot[u][j0 + j] = query head u's products with key j (chunk sums, lanes not yet added), for the 8 keys
// `key`, u < g: each a chain of FMAs over the chunks in order, as one head alone would run it.
static inline __attribute__((always_inline)) void scores_g8(const float *const q[GROUP3], const int g, const float *const key[KEYS8],
                                                            const int64_t chunks, const int j0, __m512 dot[GROUP3][BLOCK]) {
  __m512 acc[GROUP3][KEYS8];
  for (int u = 0; u < GROUP3; u++)
    for (int j = 0; j < KEYS8; j++) acc[u][j] = _mm512_setzero_ps();
  for (int64_t c = 0; c < chunks; c++) {
    __m512 qc[GROUP3];
    for (int u = 0; u < GROUP3; u++) qc[u] = u < g ? _mm512_loadu_ps(q[u] + c * 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int j = 0; j < KEYS8; j++) {
      __m512 kc = _mm512_loadu_ps(key[j] + c * 16);
      __asm__("" : "+v"(kc));  // one load in a register for the three FMAs (gcc would fold it into each)
#pragma GCC unroll 3
      for (int u = 0; u < GROUP3; u++)
        if (u < g) acc[u][j] = _mm512_fmadd_ps(qc[u], kc, acc[u][j]);
    }
  }
  for (int u = 0; u < GROUP3; u++)
    for (int j = 0; j < KEYS8; j++) dot[u][j0 + j] = acc[u][j];
}

// Three heads' weighted values over keys [0, n) of a block (every head sees n keys), chunks [c0, c0 + width),
// width <= 8: o[u][c] += p[u][j] * v[j][c] for j in order, as one head alone would add them.
static inline __attribute__((always_inline)) void values_g8(const float *const p[GROUP3], const int g, const float *vb, int64_t D,
                                                            int64_t n, int64_t c0, const int64_t width, float *const o[GROUP3]) {
  __m512 sum[GROUP3][KEYS8];
  for (int u = 0; u < GROUP3; u++)
    for (int64_t c = 0; c < width; c++) sum[u][c] = u < g ? _mm512_loadu_ps(o[u] + (c0 + c) * 16) : _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j++) {
    __m512 weight[GROUP3];
    for (int u = 0; u < GROUP3; u++) weight[u] = u < g ? _mm512_set1_ps(p[u][j]) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int64_t c = 0; c < width; c++) {
      __m512 vc = _mm512_loadu_ps(vb + j * D + (c0 + c) * 16);
      __asm__("" : "+v"(vc));  // as in scores_g8
#pragma GCC unroll 3
      for (int u = 0; u < GROUP3; u++)
        if (u < g) sum[u][c] = _mm512_fmadd_ps(weight[u], vc, sum[u][c]);
    }
  }
  for (int u = 0; u < GROUP3; u++)
    for (int64_t c = 0; c < width; c++)
      if (u < g) _mm512_storeu_ps(o[u] + (c0 + c) * 16, sum[u][c]);
}

// One key head, query rows [0, rows): each row's `rep` heads over its first lengths[i] keys. Three
// sweeps, each free of long dependency chains: all scores (a block of keys at a time, shared by every
// row and head while it sits in L1), the softmax weights of each (row, head), then the weighted values
// (a block at a time again). q, out: [rows][H][D] at this group's first head.
static inline __attribute__((always_inline)) void attend_rows_d(
    const float *q, int64_t rows, int64_t H, int64_t rep, const int64_t chunks, const float *k, const float *v,
    const int64_t *lengths, float scale, float *scratch, float *out) {
  const int64_t D = chunks * 16;
  const int64_t longest = longest_length(lengths, rows);
  const int64_t stride = (longest + BLOCK - 1) / BLOCK * BLOCK;  // scores per (row, head), whole blocks
  float *scores = scratch, *scaled = scratch + rows * rep * stride, *acc = scaled + rows * rep * D;
  float *total = acc + rows * rep * D;
  scale_queries(q, rows, H, rep, D, scale, scaled);

  const int64_t pairs = rows * rep;
  for (int64_t b0 = 0; b0 < longest; b0 += BLOCK) {
    prefetch_block(k, D, b0 + AHEAD * BLOCK, longest);
    for (int64_t h0 = 0; h0 < pairs; h0 += GROUP3) {
      int64_t pair[GROUP3], n[GROUP3], most, least;
      const int g = group_at(h0, pairs, rep, lengths, b0, pair, n, &most, &least);
      if (most <= 0) continue;
      const float *qs[GROUP3];
      for (int u = 0; u < GROUP3; u++) qs[u] = scaled + pair[u] * D;
      __m512 dot[GROUP3][BLOCK];
      for (int j0 = 0; j0 < BLOCK; j0 += KEYS8) {
        if (j0 >= most) {
          zero_keys8(dot, j0);
          continue;
        }
        const float *key[KEYS8];
        for (int j = 0; j < KEYS8; j++) key[j] = k + (b0 + (j0 + j < most ? j0 + j : most - 1)) * D;  // no key past the longest row's
        switch (g) {
          case 3: scores_g8(qs, 3, key, chunks, j0, dot); break;
          case 2: scores_g8(qs, 2, key, chunks, j0, dot); break;
          default: scores_g8(qs, 1, key, chunks, j0, dot);
        }
      }
      store_block_scores(dot, g, n, h0, stride, b0, scores);
    }
  }

  for (int64_t i = 0; i < rows; i++) {
    const int64_t blocks = (lengths[i] + BLOCK - 1) / BLOCK;
    for (int64_t r = 0; r < rep; r++) {
      float *row = scores + (i * rep + r) * stride;
      __m512 peak = _mm512_set1_ps(-INFINITY);
      for (int64_t j0 = 0; j0 < blocks * BLOCK; j0 += 16) peak = _mm512_max_ps(peak, _mm512_load_ps(row + j0));
      const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(peak));
      __m512 sum = _mm512_setzero_ps();
      for (int64_t j0 = 0; j0 < blocks * BLOCK; j0 += 16) {
        const __m512 p = exp_nonpositive(_mm512_sub_ps(_mm512_load_ps(row + j0), top));  // -inf past the row's keys -> 0
        _mm512_store_ps(row + j0, p);
        sum = _mm512_add_ps(sum, p);
      }
      total[i * rep + r] = _mm512_reduce_add_ps(sum);
    }
  }

  for (int64_t h = 0; h < rows * rep; h++)
    for (int64_t c = 0; c < chunks; c++) _mm512_storeu_ps(acc + h * D + c * 16, _mm512_setzero_ps());
  for (int64_t b0 = 0; b0 < longest; b0 += BLOCK) {
    const float *vb = v + b0 * D;
    prefetch_block(v, D, b0 + AHEAD * BLOCK, longest);
    for (int64_t h0 = 0; h0 < pairs; h0 += GROUP3) {
      int64_t pair[GROUP3], n[GROUP3], most, least;
      const int g = group_at(h0, pairs, rep, lengths, b0, pair, n, &most, &least);
      const float *p[GROUP3];
      float *o[GROUP3];
      for (int u = 0; u < GROUP3; u++) p[u] = scores + pair[u] * stride + b0, o[u] = acc + pair[u] * D;
      if (least == BLOCK) {  // every head of the group sees the whole block: the common case
        for (int64_t c0 = 0; c0 < chunks; c0 += KEYS8) {
          const int64_t width = chunks - c0 < KEYS8 ? chunks - c0 : KEYS8;
          switch (g) {
            case 3: values_g8(p, 3, vb, D, BLOCK, c0, width, o); break;
            case 2: values_g8(p, 2, vb, D, BLOCK, c0, width, o); break;
            default: values_g8(p, 1, vb, D, BLOCK, c0, width, o);
          }
        }
      } else {  // a row's last block: each head its own keys
        for (int u = 0; u < g; u++) {
          if (n[u] <= 0) continue;
          const float *pu[GROUP3] = {p[u], p[u], p[u]};
          float *ou[GROUP3] = {o[u], o[u], o[u]};
          for (int64_t c0 = 0; c0 < chunks; c0 += KEYS8)
            values_g8(pu, 1, vb, D, n[u], c0, chunks - c0 < KEYS8 ? chunks - c0 : KEYS8, ou);
        }
      }
    }
  }
  divide_by_totals_512(acc, total, rows, H, rep, D, out);
}

// attend_rows_d compiled for the head sizes of the models we serve (64, 128; 16 for tests), where the
// compiler keeps a head's query and output in registers, and for any other D.
static void attend_rows(const float *q, int64_t rows, int64_t H, int64_t rep, int64_t D, const float *k, const float *v,
                        const int64_t *lengths, float scale, float *scratch, float *out) {
  switch (D) {
    case 128: attend_rows_d(q, rows, H, rep, 8, k, v, lengths, scale, scratch, out); break;
    case 64: attend_rows_d(q, rows, H, rep, 4, k, v, lengths, scale, scratch, out); break;
    case 16: attend_rows_d(q, rows, H, rep, 1, k, v, lengths, scale, scratch, out); break;
    default: attend_rows_d(q, rows, H, rep, D / 16, k, v, lengths, scale, scratch, out);
  }
}

#pragma GCC pop_options

// The same computation with AVX2 (8-float vectors), for CPUs without AVX-512F: its own fixed order of
// operations (chunks of 8, the lane sums below), so its bits differ from the AVX-512 variant's, but as
// there a row's result never depends on the other rows of the batch. Its 16 registers hold one head's
// 8 dot products at most, too few chains to hide the FMA latency, so the sweeps take three (row, head)
// pairs at a time, each still summing in its own order: 1.35x faster for one row, 1.4x for nine.
#pragma GCC push_options
#pragma GCC target("avx2,fma")

// exp_nonpositive on 8 lanes: the same reduction and polynomial, 2^n built in the exponent bits
// (n >= -126 after the clamp, so it is a normal float).
static inline __attribute__((always_inline)) __m256 exp_nonpositive_8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
  x = _mm256_max_ps(x, lo);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(keep, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

static inline __attribute__((always_inline)) float max_lanes_8(__m256 v) {
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
}

static inline __attribute__((always_inline)) float add_lanes_8(__m256 v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}

// Scaled query heads sharing each key load: three heads times four keys keep 12 accumulators in flight
// (the FMA latency hides behind them; one head's 8 did not) in 16 registers.
#define KEYS4 4

// The lane sums of 4 vectors, each ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)).
static inline __attribute__((always_inline)) __m128 sum_lanes_4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// dots[u] = the 4 keys' scores for query head u < g: each a chain of FMAs over the chunks in order.
static inline __attribute__((always_inline)) void scores_g4(const float *const q[GROUP3], const int g, const float *const key[KEYS4],
                                                            const int64_t chunks, __m128 dots[GROUP3]) {
  __m256 dot[GROUP3][KEYS4];
  for (int u = 0; u < GROUP3; u++)
    for (int j = 0; j < KEYS4; j++) dot[u][j] = _mm256_setzero_ps();
  for (int64_t c = 0; c < chunks; c++) {
    __m256 qc[GROUP3];
    for (int u = 0; u < GROUP3; u++) qc[u] = u < g ? _mm256_loadu_ps(q[u] + c * 8) : _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int j = 0; j < KEYS4; j++) {
      const __m256 kc = _mm256_loadu_ps(key[j] + c * 8);
#pragma GCC unroll 3
      for (int u = 0; u < GROUP3; u++)
        if (u < g) dot[u][j] = _mm256_fmadd_ps(qc[u], kc, dot[u][j]);
    }
  }
  for (int u = 0; u < GROUP3; u++)
    if (u < g) dots[u] = sum_lanes_4(dot[u][0], dot[u][1], dot[u][2], dot[u][3]);
}

// Three heads' weighted values over keys [0, n) of a block, chunks [c0, c0 + 4) (every head sees n keys):
// acc[u][c] += p[u][j] * v[j][c] for j in order, as one head alone would add them.
static inline __attribute__((always_inline)) void values_g4(const float *const p[GROUP3], const int g, const float *vb, int64_t D,
                                                            int64_t n, int64_t c0, int64_t width, float *const o[GROUP3]) {
  __m256 sum[GROUP3][KEYS4];
  for (int u = 0; u < GROUP3; u++)
    for (int c = 0; c < KEYS4; c++) sum[u][c] = u < g && c < width ? _mm256_loadu_ps(o[u] + (c0 + c) * 8) : _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j++) {
    __m256 weight[GROUP3];
    for (int u = 0; u < GROUP3; u++) weight[u] = u < g ? _mm256_set1_ps(p[u][j]) : _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int c = 0; c < KEYS4; c++) {
      if (c < width) {
        const __m256 vc = _mm256_loadu_ps(vb + j * D + (c0 + c) * 8);
#pragma GCC unroll 3
        for (int u = 0; u < GROUP3; u++)
          if (u < g) sum[u][c] = _mm256_fmadd_ps(weight[u], vc, sum[u][c]);
      }
    }
  }
  for (int u = 0; u < GROUP3; u++)
    for (int c = 0; c < KEYS4; c++)
      if (u < g && c < width) _mm256_storeu_ps(o[u] + (c0 + c) * 8, sum[u][c]);
}

// attend_rows_d with 8-float chunks: the same three sweeps, the (row, head) pairs three at a time.
static void attend_rows_8(const float *q, int64_t rows, int64_t H, int64_t rep, int64_t D, const float *k,
                          const float *v, const int64_t *lengths, float scale, float *scratch, float *out) {
  const int64_t chunks = D / 8, pairs = rows * rep;
  const int64_t longest = longest_length(lengths, rows);
  const int64_t stride = (longest + BLOCK - 1) / BLOCK * BLOCK;
  float *scores = scratch, *scaled = scratch + pairs * stride, *acc = scaled + pairs * D;
  float *total = acc + pairs * D;
  scale_queries(q, rows, H, rep, D, scale, scaled);

  for (int64_t b0 = 0; b0 < longest; b0 += BLOCK) {
    prefetch_block(k, D, b0 + AHEAD * BLOCK, longest);
    for (int64_t h0 = 0; h0 < pairs; h0 += GROUP3) {
      int64_t pair[GROUP3], n[GROUP3], most, least;
      const int g = group_at(h0, pairs, rep, lengths, b0, pair, n, &most, &least);
      if (most <= 0) continue;
      const float *qs[GROUP3];
      for (int u = 0; u < GROUP3; u++) qs[u] = scaled + pair[u] * D;
      for (int64_t j0 = 0; j0 < BLOCK; j0 += KEYS4) {
        __m128 dots[GROUP3] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
        if (j0 < most) {
          const float *key[KEYS4];
          for (int j = 0; j < KEYS4; j++) key[j] = k + (b0 + (j0 + j < most ? j0 + j : most - 1)) * D;  // no key past the longest row's
          switch (g) {
            case 3: scores_g4(qs, 3, key, chunks, dots); break;
            case 2: scores_g4(qs, 2, key, chunks, dots); break;
            default: scores_g4(qs, 1, key, chunks, dots);
          }
        }
        for (int u = 0; u < g; u++) {
          if (n[u] <= 0) continue;  // this row's keys ended in an earlier block
          const __m128 valid = _mm_castsi128_ps(_mm_cmpgt_epi32(_mm_set1_epi32((int)(n[u] - j0)), _mm_setr_epi32(0, 1, 2, 3)));
          _mm_storeu_ps(scores + (h0 + u) * stride + b0 + j0, _mm_blendv_ps(_mm_set1_ps(-INFINITY), dots[u], valid));
        }
      }
    }
  }

  for (int64_t i = 0; i < rows; i++) {
    const int64_t blocks = (lengths[i] + BLOCK - 1) / BLOCK;
    for (int64_t r = 0; r < rep; r++) {
      float *row = scores + (i * rep + r) * stride;
      __m256 peak = _mm256_set1_ps(-INFINITY);
      for (int64_t j0 = 0; j0 < blocks * BLOCK; j0 += 8) peak = _mm256_max_ps(peak, _mm256_load_ps(row + j0));
      const __m256 top = _mm256_set1_ps(max_lanes_8(peak));
      __m256 sum = _mm256_setzero_ps();
      for (int64_t j0 = 0; j0 < blocks * BLOCK; j0 += 8) {
        const __m256 p = exp_nonpositive_8(_mm256_sub_ps(_mm256_load_ps(row + j0), top));
        _mm256_store_ps(row + j0, p);
        sum = _mm256_add_ps(sum, p);
      }
      total[i * rep + r] = add_lanes_8(sum);
    }
  }

  for (int64_t h = 0; h < pairs; h++)
    for (int64_t d = 0; d < D; d += 8) _mm256_storeu_ps(acc + h * D + d, _mm256_setzero_ps());
  for (int64_t b0 = 0; b0 < longest; b0 += BLOCK) {
    const float *vb = v + b0 * D;
    prefetch_block(v, D, b0 + AHEAD * BLOCK, longest);
    for (int64_t h0 = 0; h0 < pairs; h0 += GROUP3) {
      int64_t pair[GROUP3], n[GROUP3], most, least;
      const int g = group_at(h0, pairs, rep, lengths, b0, pair, n, &most, &least);
      const float *p[GROUP3];
      float *o[GROUP3];
      for (int u = 0; u < GROUP3; u++) p[u] = scores + pair[u] * stride + b0, o[u] = acc + pair[u] * D;
      if (least == BLOCK) {  // every head of the group sees the whole block: the common case
        for (int64_t c0 = 0; c0 < chunks; c0 += KEYS4) {
          const int64_t width = chunks - c0 < KEYS4 ? chunks - c0 : KEYS4;
          switch (g) {
            case 3: values_g4(p, 3, vb, D, BLOCK, c0, width, o); break;
            case 2: values_g4(p, 2, vb, D, BLOCK, c0, width, o); break;
            default: values_g4(p, 1, vb, D, BLOCK, c0, width, o);
          }
        }
      } else {  // a row's last block: each head its own keys
        for (int u = 0; u < g; u++) {
          if (n[u] <= 0) continue;
          const float *pu[GROUP3] = {p[u], p[u], p[u]};
          float *ou[GROUP3] = {o[u], o[u], o[u]};
          for (int64_t c0 = 0; c0 < chunks; c0 += KEYS4)
            values_g4(pu, 1, vb, D, n[u], c0, chunks - c0 < KEYS4 ? chunks - c0 : KEYS4, ou);
        }
      }
    }
  }
  for (int64_t i = 0; i < rows; i++)
    for (int64_t r = 0; r < rep; r++)
      for (int64_t d = 0; d < D; d += 8)
        _mm256_storeu_ps(out + i * H * D + r * D + d,
                         _mm256_div_ps(_mm256_loadu_ps(acc + (i * rep + r) * D + d), _mm256_set1_ps(total[i * rep + r])));
}
#pragma GCC pop_options

// Floats of scratch attend_rows_d and attend_rows_8 need.
static int64_t scratch_floats(int64_t rows, int64_t rep, int64_t D, const int64_t *lengths) {
  return rows * rep * ((longest_length(lengths, rows) + BLOCK - 1) / BLOCK * BLOCK + 2 * D + 1) + 16;
}

// Returns 0; -1 for a shape it does not take (D not a multiple of 16 or over 256, rep over 8, a row
// with no keys or more than S); -2 when scratch memory cannot be had. `tasks_per_head` splits each
// key head's rows among that many tasks (any split gives the same bits).
typedef void (*attend_fn)(const float *q, int64_t rows, int64_t H, int64_t rep, int64_t D, const float *k,
                          const float *v, const int64_t *lengths, float scale, float *scratch, float *out);
typedef int64_t (*scratch_fn)(int64_t rows, int64_t rep, int64_t D, const int64_t *lengths);

static int attention_with(attend_fn attend, scratch_fn scratch_size, const float *q, int64_t Q, int64_t Hkv, int64_t rep, int64_t D,
                          const float *k, const float *v, int64_t head_stride, int64_t S, const int64_t *lengths,
                          float scale, float *out) {
  if (D % 16 != 0 || D / 16 > MAX_CHUNKS || rep < 1 || rep > MAX_REP) return -1;
  for (int64_t i = 0; i < Q; i++)
    if (lengths[i] < 1 || lengths[i] > S) return -1;
  const int64_t H = Hkv * rep;
  const int threads = omp_get_max_threads();
  const int64_t per_head = Hkv >= threads ? 1 : (threads + Hkv - 1) / Hkv;  // tasks per key head
  const int64_t chunk = (Q + per_head - 1) / per_head;  // rows per task
  const int64_t tasks_per_head = (Q + chunk - 1) / chunk;
  int failed = 0;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < Hkv * tasks_per_head; t++) {
    const int64_t g = t / tasks_per_head, i0 = (t % tasks_per_head) * chunk;
    const int64_t rows = Q - i0 < chunk ? Q - i0 : chunk;
    float *scratch = aligned_alloc(64, sizeof(float) * (size_t)((scratch_size(rows, rep, D, lengths + i0) + 15) / 16 * 16));
    if (!scratch) {
#pragma omp atomic write
      failed = 1;
      continue;
    }
    attend(q + (i0 * H + g * rep) * D, rows, H, rep, D, k + g * head_stride, v + g * head_stride, lengths + i0,
                scale, scratch, out + (i0 * H + g * rep) * D);
    free(scratch);
  }
  return failed ? -2 : 0;
}

// The AVX-512F variant; call it only where the CPU has AVX-512F (cpu_attention.py checks).
int livefim_attention(const float *q, int64_t Q, int64_t Hkv, int64_t rep, int64_t D, const float *k, const float *v,
                      int64_t head_stride, int64_t S, const int64_t *lengths, float scale, float *out) {
  return attention_with(attend_rows, scratch_floats, q, Q, Hkv, rep, D, k, v, head_stride, S, lengths, scale, out);
}

// The AVX2 variant, for any x86-64 CPU with AVX2 and FMA.
int livefim_attention_avx2(const float *q, int64_t Q, int64_t Hkv, int64_t rep, int64_t D, const float *k,
                           const float *v, int64_t head_stride, int64_t S, const int64_t *lengths, float scale,
                           float *out) {
  return attention_with(attend_rows_8, scratch_floats, q, Q, Hkv, rep, D, k, v, head_stride, S, lengths, scale, out);
}

// The same computation in bf16 with AVX512-BF16's dot products (vdpbf16ps), for CPUs that have them but
// no AMX (AMD Zen 4 and 5, Intel Cooper Lake), D a multiple of 32.
//
// Why: with several query rows the fp32 sweeps are bound by FMAs (Zen 4: a 9-row pass's attention took
// 7x a row's at 4k keys), and one vdpbf16ps multiplies 32 bf16 pairs where an FMA takes 16 floats.
// Queries, keys, softmax weights and values are rounded to bf16 as the AMX variant rounds them, with fp32
// sums, so it keeps that variant's accuracy (BENCHMARKS.md); its own order of sums makes other bits.
//
// The structure is the fp32 AVX-512 variant's: three sweeps over blocks of 16 keys, each block's loads
// shared by three (row, head) pairs. A block's keys and values are converted once for every pair: keys
// to bf16 rows, values to pairs of keys interleaved per dimension (what vdpbf16ps sums over). Batch
// invariance holds as in the AMX variant: each score and output element is a chain of its own row's
// products in a fixed order of blocks, and weights past a row's keys are exact zeros, which add nothing.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,fma")

// bf16 of 32 floats: lo[0..15] then hi[0..15].
static inline __attribute__((always_inline)) __m512i bf16_32(__m512 lo, __m512 hi) {
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

// bf16 pairs (a[i], b[i]) in 32-bit lane i: two keys' values of 16 dimensions, as vdpbf16ps and AMX's
// B tiles pair them.
static inline __attribute__((always_inline)) __m512i bf16_pairs(__m512 a, __m512 b) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                              23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, bf16_32(a, b));
}

// scale_queries in bf16: qb[i * rep + r] = q's row i, head r (of this key head's group), times scale, [rows * rep][D].
// Both bf16 variants round the queries here, after scaling.
static inline __attribute__((always_inline)) void scale_queries_bf16(const float *q, int64_t rows, int64_t H, int64_t rep,
                                                                     int64_t D, float scale, uint16_t *qb) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < rows; i++)
    for (int64_t r = 0; r < rep; r++)
      for (int64_t d = 0; d < D; d += 32) {
        const float *src = q + i * H * D + r * D + d;
        _mm512_storeu_si512(qb + (i * rep + r) * D + d,
                            bf16_32(_mm512_mul_ps(_mm512_loadu_ps(src), s), _mm512_mul_ps(_mm512_loadu_ps(src + 16), s)));
      }
}

// A block's keys in bf16, kb[n][D]; keys from `valid` on are zeros.
static inline __attribute__((always_inline)) void keys_to_bf16(const float *k, int64_t D, int valid, uint16_t *kb) {
  for (int n = 0; n < BLOCK; n++)
    for (int64_t d = 0; d < D; d += 32)
      _mm512_storeu_si512(kb + n * D + d, n < valid ? bf16_32(_mm512_loadu_ps(k + n * D + d), _mm512_loadu_ps(k + n * D + d + 16))
                                                    : _mm512_setzero_si512());
}

// A block's values as key pairs: vp[(p * D/16 + c) * 32 ..] = keys 2p and 2p + 1, dimensions 16c .. 16c + 15,
// bf16_pairs; keys from `valid` on are zeros.
static inline __attribute__((always_inline)) void values_to_bf16_pairs(const float *v, int64_t D, int valid, uint16_t *vp) {
  for (int p = 0; p < BLOCK / 2; p++)
    for (int64_t c = 0; c < D / 16; c++) {
      const __m512 a = 2 * p < valid ? _mm512_loadu_ps(v + 2 * p * D + 16 * c) : _mm512_setzero_ps();
      const __m512 b = 2 * p + 1 < valid ? _mm512_loadu_ps(v + (2 * p + 1) * D + 16 * c) : _mm512_setzero_ps();
      _mm512_storeu_si512(vp + (p * (D / 16) + c) * 32, bf16_pairs(a, b));
    }
}

// scores_g8 on bf16 rows: dot[u][j0 + j] = lane sums (not yet added) of query u's products with key j,
// 32 dimensions a chunk.
static inline __attribute__((always_inline)) void scores_bf16_g8(const uint16_t *const q[GROUP3], const int g,
                                                                 const uint16_t *const key[KEYS8], const int64_t chunks32,
                                                                 const int j0, __m512 dot[GROUP3][BLOCK]) {
  __m512 acc[GROUP3][KEYS8];
  for (int u = 0; u < GROUP3; u++)
    for (int j = 0; j < KEYS8; j++) acc[u][j] = _mm512_setzero_ps();
  for (int64_t c = 0; c < chunks32; c++) {
    __m512i qc[GROUP3];
    for (int u = 0; u < GROUP3; u++) qc[u] = u < g ? _mm512_loadu_si512(q[u] + c * 32) : _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int j = 0; j < KEYS8; j++) {
      __m512i kc = _mm512_loadu_si512(key[j] + c * 32);
      __asm__("" : "+v"(kc));  // as in scores_g8
#pragma GCC unroll 3
      for (int u = 0; u < GROUP3; u++)
        if (u < g) acc[u][j] = _mm512_dpbf16_ps(acc[u][j], (__m512bh)qc[u], (__m512bh)kc);
    }
  }
  for (int u = 0; u < GROUP3; u++)
    for (int j = 0; j < KEYS8; j++) dot[u][j0 + j] = acc[u][j];
}

// values_g8 on bf16 pairs: o[u][c] += w[u][p] . (v[2p][c], v[2p + 1][c]) for the block's 8 key pairs in order,
// chunks [c0, c0 + width); w[u][p] holds query u's weights of keys 2p and 2p + 1 as a bf16 pair.
static inline __attribute__((always_inline)) void values_bf16_g8(const uint32_t *const w[GROUP3], const int g,
                                                                 const uint16_t *vp, int64_t D, int64_t c0,
                                                                 const int64_t width, float *const o[GROUP3]) {
  __m512 sum[GROUP3][KEYS8];
  for (int u = 0; u < GROUP3; u++)
    for (int64_t c = 0; c < width; c++) sum[u][c] = u < g ? _mm512_loadu_ps(o[u] + (c0 + c) * 16) : _mm512_setzero_ps();
  for (int p = 0; p < BLOCK / 2; p++) {
    __m512i weight[GROUP3];
    for (int u = 0; u < GROUP3; u++) weight[u] = u < g ? _mm512_set1_epi32((int)w[u][p]) : _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int64_t c = 0; c < width; c++) {
      __m512i vc = _mm512_loadu_si512(vp + (p * (D / 16) + c0 + c) * 32);
      __asm__("" : "+v"(vc));
#pragma GCC unroll 3
      for (int u = 0; u < GROUP3; u++)
        if (u < g) sum[u][c] = _mm512_dpbf16_ps(sum[u][c], (__m512bh)weight[u], (__m512bh)vc);
    }
  }
  for (int u = 0; u < GROUP3; u++)
    for (int64_t c = 0; c < width; c++)
      if (u < g) _mm512_storeu_ps(o[u] + (c0 + c) * 16, sum[u][c]);
}

// Floats of scratch attend_rows_bf16 needs: scores, sums and totals in fp32; queries, weights and one
// block's keys and values in bf16.
static int64_t scratch_floats_bf16(int64_t rows, int64_t rep, int64_t D, const int64_t *lengths) {
  const int64_t pairs = rows * rep, stride = (longest_length(lengths, rows) + BLOCK - 1) / BLOCK * BLOCK;
  return pairs * stride + pairs * D + (pairs + 15) / 16 * 16 + pairs * D / 2 + pairs * stride / 2 + BLOCK * D + 16;
}

// attend_rows_d in bf16 (see above). D = chunks * 16, a multiple of 32.
static inline __attribute__((always_inline)) void attend_rows_bf16_d(
    const float *q, int64_t rows, int64_t H, int64_t rep, const int64_t chunks, const float *k, const float *v,
    const int64_t *lengths, float scale, float *scratch, float *out) {
  const int64_t D = chunks * 16, pairs = rows * rep;
  const int64_t longest = longest_length(lengths, rows);
  const int64_t stride = (longest + BLOCK - 1) / BLOCK * BLOCK;
  float *scores = scratch, *acc = scores + pairs * stride, *total = acc + pairs * D;
  uint16_t *qb = (uint16_t *)(total + (pairs + 15) / 16 * 16);  // [pairs][D]
  uint16_t *probs = qb + pairs * D;                             // [pairs][stride], zeros past each row's keys
  uint16_t *kb = probs + pairs * stride;                        // one block: [BLOCK][D]
  uint16_t *vp = kb + BLOCK * D;                                // one block: [BLOCK / 2][D / 16][32]

  scale_queries_bf16(q, rows, H, rep, D, scale, qb);

  for (int64_t b0 = 0; b0 < longest; b0 += BLOCK) {
    prefetch_block(k, D, b0 + AHEAD * BLOCK, longest);
    keys_to_bf16(k + b0 * D, D, longest - b0 < BLOCK ? (int)(longest - b0) : BLOCK, kb);
    for (int64_t h0 = 0; h0 < pairs; h0 += GROUP3) {
      int64_t pair[GROUP3], n[GROUP3], most, least;
      const int g = group_at(h0, pairs, rep, lengths, b0, pair, n, &most, &least);
      if (most <= 0) continue;
      const uint16_t *qs[GROUP3];
      for (int u = 0; u < GROUP3; u++) qs[u] = qb + pair[u] * D;
      __m512 dot[GROUP3][BLOCK];
      for (int j0 = 0; j0 < BLOCK; j0 += KEYS8) {
        if (j0 >= most) {
          zero_keys8(dot, j0);
          continue;
        }
        const uint16_t *key[KEYS8];
        for (int j = 0; j < KEYS8; j++) key[j] = kb + (j0 + j) * D;  // zeros past the longest row's keys
        switch (g) {
          case 3: scores_bf16_g8(qs, 3, key, chunks / 2, j0, dot); break;
          case 2: scores_bf16_g8(qs, 2, key, chunks / 2, j0, dot); break;
          default: scores_bf16_g8(qs, 1, key, chunks / 2, j0, dot);
        }
      }
      store_block_scores(dot, g, n, h0, stride, b0, scores);
    }
  }

  for (int64_t m = 0; m < pairs; m++) {
    const int64_t end = (lengths[m / rep] + BLOCK - 1) / BLOCK * BLOCK;
    float *row = scores + m * stride;
    __m512 peak = _mm512_set1_ps(-INFINITY);
    for (int64_t j0 = 0; j0 < end; j0 += 16) peak = _mm512_max_ps(peak, _mm512_loadu_ps(row + j0));
    const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(peak));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j0 = 0; j0 < end; j0 += 32) {  // end is a multiple of 16: the second half may lie past it
      const __m512 p0 = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + j0), top));  // -inf past the keys -> 0
      const __m512 p1 = j0 + 16 < end ? exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + j0 + 16), top)) : _mm512_setzero_ps();
      sum = _mm512_add_ps(_mm512_add_ps(sum, p0), p1);
      const __m512i both = bf16_32(p0, p1);
      _mm256_storeu_si256((__m256i *)(probs + m * stride + j0), _mm512_castsi512_si256(both));
      if (j0 + 16 < stride) _mm256_storeu_si256((__m256i *)(probs + m * stride + j0 + 16), _mm512_extracti64x4_epi64(both, 1));
    }
    for (int64_t j0 = end; j0 < stride; j0 += 16)  // blocks past this row's keys, which longer rows of the pass reach
      _mm256_storeu_si256((__m256i *)(probs + m * stride + j0), _mm256_setzero_si256());
    total[m] = _mm512_reduce_add_ps(sum);
  }

  for (int64_t m = 0; m < pairs; m++)
    for (int64_t c = 0; c < chunks; c++) _mm512_storeu_ps(acc + m * D + c * 16, _mm512_setzero_ps());
  for (int64_t b0 = 0; b0 < longest; b0 += BLOCK) {
    prefetch_block(v, D, b0 + AHEAD * BLOCK, longest);
    values_to_bf16_pairs(v + b0 * D, D, longest - b0 < BLOCK ? (int)(longest - b0) : BLOCK, vp);
    for (int64_t h0 = 0; h0 < pairs; h0 += GROUP3) {
      int64_t pair[GROUP3], n[GROUP3], most, least;
      const int g = group_at(h0, pairs, rep, lengths, b0, pair, n, &most, &least);
      if (most <= 0) continue;  // every row of the group has ended: its weights here are zeros
      const uint32_t *w[GROUP3];
      float *o[GROUP3];
      for (int u = 0; u < GROUP3; u++) w[u] = (const uint32_t *)(probs + pair[u] * stride + b0), o[u] = acc + pair[u] * D;
      for (int64_t c0 = 0; c0 < chunks; c0 += KEYS8) {
        const int64_t width = chunks - c0 < KEYS8 ? chunks - c0 : KEYS8;
        switch (g) {
          case 3: values_bf16_g8(w, 3, vp, D, c0, width, o); break;
          case 2: values_bf16_g8(w, 2, vp, D, c0, width, o); break;
          default: values_bf16_g8(w, 1, vp, D, c0, width, o);
        }
      }
    }
  }
  divide_by_totals_512(acc, total, rows, H, rep, D, out);
}

static void attend_rows_bf16(const float *q, int64_t rows, int64_t H, int64_t rep, int64_t D, const float *k, const float *v,
                             const int64_t *lengths, float scale, float *scratch, float *out) {
  switch (D) {
    case 128: attend_rows_bf16_d(q, rows, H, rep, 8, k, v, lengths, scale, scratch, out); break;
    case 64: attend_rows_bf16_d(q, rows, H, rep, 4, k, v, lengths, scale, scratch, out); break;
    case 32: attend_rows_bf16_d(q, rows, H, rep, 2, k, v, lengths, scale, scratch, out); break;
    default: attend_rows_bf16_d(q, rows, H, rep, D / 16, k, v, lengths, scale, scratch, out);
  }
}
#pragma GCC pop_options

// The AVX512-BF16 variant; call it only where the CPU has AVX-512F, BW and BF16. D must be a multiple of 32 (else -1).
int livefim_attention_bf16(const float *q, int64_t Q, int64_t Hkv, int64_t rep, int64_t D, const float *k, const float *v,
                           int64_t head_stride, int64_t S, const int64_t *lengths, float scale, float *out) {
  if (D % 32 != 0) return -1;
  return attention_with(attend_rows_bf16, scratch_floats_bf16, q, Q, Hkv, rep, D, k, v, head_stride, S, lengths, scale, out);
}

// The same computation on Intel AMX in bf16, for CPUs with AMX-BF16 and AVX512-BF16, D a multiple of 32.
//
// Why: with several query rows the fp32 sweeps above are bound by FMAs (a 9-row pass at 8k keys cost
// 2.6x a decode step's attention), while one tile product multiplies 16 rows by 16 keys over 32
// dimensions. Here the query rows, keys, probabilities and values are rounded to bf16 (products
// summed in fp32), so a pass of many rows costs about what one row does: reading the cache.
//
// Still batch-invariant: every score and every output element of a row is one tile element, computed
// from that row's own tile row alone, in the same order of key blocks and dimensions whatever else is
// in the pass; the softmax is per row; probabilities past a row's keys are exact zeros, which add
// nothing to the output tiles. (Only an output sum in the denormal range could differ, flushed by the
// extra zero products of a longer pass: an attention output of 1e-38 does not occur.)
//
// Per key head: S = Q K^T (rows m = row * rep + head, 16 at a time; K^T built per block of 16 keys by
// converting them to bf16 and transposing 32-bit pairs), softmax per row, then O = P V (V converted once
// per call into tiles of 16 key pairs by 16 dimensions). Tiles: 0-3 accumulate, 4 = A, 5 = B (PV) or
// 4-7 = K^T and 1 = A (QK), all 16 rows by 64 bytes.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,fma,amx-tile,amx-bf16")
// Returns 0 when Linux grants this process the AMX tile state, else -1.
int livefim_attention_amx_init(void) { return amx_request_tiles(); }

static void configure_tiles(void) {
  amx_tile_config config;
  memset(&config, 0, sizeof config);
  config.palette = 1;
  for (int t = 0; t < 8; t++) config.rows[t] = 16, config.colsb[t] = 64;
  _tile_loadconfig(&config);
}

// 16x16 32-bit transpose of r[0..15] in place (rows become columns).
static inline __attribute__((always_inline)) void transpose_16x16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; i++) {  // 128-bit lanes: rows i, i+4, i+8, i+12 hold the four quarters
    const __m512i a = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88), b = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xDD);
    const __m512i c = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88), d = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xDD);
    t[i] = _mm512_shuffle_i32x4(a, c, 0x88), t[i + 8] = _mm512_shuffle_i32x4(a, c, 0xDD);
    t[i + 4] = _mm512_shuffle_i32x4(b, d, 0x88), t[i + 12] = _mm512_shuffle_i32x4(b, d, 0xDD);
  }
  for (int j = 0; j < 16; j++) r[j] = t[j];
}

// K^T tiles of one block of 16 keys (keys past `valid` read as zeros): kt[c] is 16 rows (dimension pairs
// 32c/2 .. 32c/2 + 15) of 16 keys' bf16 pairs, 64 bytes each.
static inline void keys_to_tiles(const float *kb, int64_t D, int valid, uint8_t *kt) {
  for (int64_t c = 0; c < D / 32; c++) {
    __m512i r[16];
    for (int n = 0; n < 16; n++)
      r[n] = n < valid ? bf16_32(_mm512_loadu_ps(kb + n * D + 32 * c), _mm512_loadu_ps(kb + n * D + 32 * c + 16))
                       : _mm512_setzero_si512();
    transpose_16x16(r);
    for (int p = 0; p < 16; p++) _mm512_storeu_si512(kt + c * 1024 + p * 64, r[p]);
  }
}

// V as PV's B tiles: vt[(j * D/16 + t) * 1024 + p * 64] = keys 32j + 2p and 32j + 2p + 1, dimensions
// 16t .. 16t + 15, interleaved bf16 pairs, for keys [0, padded). Keys from `n` on read as zeros.
static inline void values_to_tiles(const float *v, int64_t D, int64_t n, int64_t padded, uint8_t *vt) {
  for (int64_t key = 0; key < padded; key += 2) {
    const int64_t j = key / 32, p = (key % 32) / 2;
    if (key + 16 < n) _mm_prefetch((const char *)(v + (key + 16) * D), _MM_HINT_T0);
    for (int64_t t = 0; t < D / 16; t++) {
      const __m512 a = key < n ? _mm512_loadu_ps(v + key * D + 16 * t) : _mm512_setzero_ps();
      const __m512 b = key + 1 < n ? _mm512_loadu_ps(v + (key + 1) * D + 16 * t) : _mm512_setzero_ps();
      _mm512_storeu_si512(vt + (j * (D / 16) + t) * 1024 + p * 64, bf16_pairs(a, b));
    }
  }
}

#define VALUE_BLOCK 256  // keys whose value tiles are built at once (64 KB at D 128) and reused by every row tile

// Floats of scratch attend_rows_amx needs (each buffer a whole number of 64-byte lines).
static int64_t scratch_floats_amx(int64_t rows, int64_t rep, int64_t D, const int64_t *lengths) {
  const int64_t tiles_m = (rows * rep + 15) / 16, padded = (longest_length(lengths, rows) + 31) / 32 * 32;
  return tiles_m * 16 * D / 2 + tiles_m * 16 * padded * 3 / 2 + VALUE_BLOCK * D / 2 + D / 32 * 256 + tiles_m * 16 * (D + 16) + 16;
}

static void attend_rows_amx(const float *q, int64_t rows, int64_t H, int64_t rep, int64_t D, const float *k,
                            const float *v, const int64_t *lengths, float scale, float *scratch, float *out) {
  const int64_t M = rows * rep, tiles_m = (M + 15) / 16, longest = longest_length(lengths, rows);
  const int64_t padded = (longest + 31) / 32 * 32;  // keys in whole PV chunks of 32
  uint16_t *qb = (uint16_t *)scratch;                          // [tiles_m * 16][D] bf16
  float *scores = scratch + tiles_m * 16 * D / 2;              // [tiles_m * 16][padded]
  uint16_t *probs = (uint16_t *)(scores + tiles_m * 16 * padded);  // [tiles_m * 16][padded] bf16
  uint8_t *vt = (uint8_t *)(scores + tiles_m * 16 * padded * 3 / 2);  // VALUE_BLOCK * D bf16
  uint8_t *kt = vt + VALUE_BLOCK * D * 2;                      // D / 32 tiles of 1 KB
  float *acc = (float *)(kt + D / 32 * 1024);                  // [tiles_m * 16][D]
  float *total = acc + tiles_m * 16 * D;                       // [tiles_m * 16]
  configure_tiles();

  // 1. Scaled queries in bf16, one row per (row, head); padding rows are zeros.
  memset(qb, 0, (size_t)(tiles_m * 16 * D * 2));
  scale_queries_bf16(q, rows, H, rep, D, scale, qb);

  // 2. Scores, a block of 16 keys at a time for every row tile.
  for (int64_t b0 = 0; b0 < padded; b0 += 16) {
    const int valid = b0 >= longest ? 0 : (longest - b0 < 16 ? (int)(longest - b0) : 16);
    prefetch_block(k, D, b0 + AHEAD * BLOCK, longest);
    keys_to_tiles(k + b0 * D, D, valid, kt);
    for (int64_t mt = 0; mt < tiles_m; mt++) {
      _tile_zero(0);
      for (int64_t c = 0; c < D / 32; c++) {
        _tile_loadd(1, qb + mt * 16 * D + 32 * c, D * 2);
        _tile_loadd(4, kt + c * 1024, 64);
        _tile_dpbf16ps(0, 1, 4);
      }
      _tile_stored(0, scores + mt * 16 * padded + b0, padded * 4);
    }
  }

  // 3. Softmax weights of each (row, head) over its own keys, in bf16, zeros past them.
  memset(probs, 0, (size_t)(tiles_m * 16 * padded * 2));
  for (int64_t m = 0; m < M; m++) {
    const int64_t n = lengths[m / rep];
    const float *row = scores + m * padded;
    __m512 peak = _mm512_set1_ps(-INFINITY);
    for (int64_t j0 = 0; j0 < n; j0 += 16) {
      const __mmask16 lanes = n - j0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j0)) - 1u);
      peak = _mm512_max_ps(peak, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), lanes, row + j0));
    }
    const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(peak));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j0 = 0; j0 < n; j0 += 32) {
      __m512 p[2];
      for (int h = 0; h < 2; h++) {
        const int64_t left = n - j0 - 16 * h;
        const __mmask16 lanes = left >= 16 ? (__mmask16)0xFFFF : (left <= 0 ? 0 : (__mmask16)((1u << left) - 1u));
        p[h] = _mm512_maskz_mov_ps(lanes, exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, row + j0 + 16 * h), top)));
        sum = _mm512_add_ps(sum, p[h]);
      }
      _mm512_storeu_si512(probs + m * padded + j0, bf16_32(p[0], p[1]));
    }
    total[m] = _mm512_reduce_add_ps(sum);
  }

  // 4. Weighted values: O = P V, VALUE_BLOCK keys at a time (their value tiles built once, then used by every
  // row tile), four 16-dimension output tiles at a time, accumulated in `acc` between blocks (exact: fp32).
  memset(acc, 0, sizeof(float) * (size_t)(tiles_m * 16 * D));
  for (int64_t kb0 = 0; kb0 < padded; kb0 += VALUE_BLOCK) {
    const int64_t keys = padded - kb0 < VALUE_BLOCK ? padded - kb0 : VALUE_BLOCK;
    values_to_tiles(v + kb0 * D, D, longest - kb0, keys, vt);
    for (int64_t mt = 0; mt < tiles_m; mt++) {
      for (int64_t t0 = 0; t0 < D / 16; t0 += 4) {
        const int width = D / 16 - t0 < 4 ? (int)(D / 16 - t0) : 4;
        float *o = acc + mt * 16 * D + 16 * t0;
        _tile_loadd(0, o, D * 4);
        if (width > 1) _tile_loadd(1, o + 16, D * 4);
        if (width > 2) _tile_loadd(2, o + 32, D * 4);
        if (width > 3) _tile_loadd(3, o + 48, D * 4);
        for (int64_t j = 0; j < keys / 32; j++) {
          _tile_loadd(4, probs + mt * 16 * padded + kb0 + 32 * j, padded * 2);
          const uint8_t *b = vt + (j * (D / 16) + t0) * 1024;
          _tile_loadd(5, b, 64);
          _tile_dpbf16ps(0, 4, 5);
          if (width > 1) { _tile_loadd(5, b + 1024, 64); _tile_dpbf16ps(1, 4, 5); }
          if (width > 2) { _tile_loadd(5, b + 2048, 64); _tile_dpbf16ps(2, 4, 5); }
          if (width > 3) { _tile_loadd(5, b + 3072, 64); _tile_dpbf16ps(3, 4, 5); }
        }
        _tile_stored(0, o, D * 4);
        if (width > 1) _tile_stored(1, o + 16, D * 4);
        if (width > 2) _tile_stored(2, o + 32, D * 4);
        if (width > 3) _tile_stored(3, o + 48, D * 4);
      }
    }
  }
  _tile_release();
  divide_by_totals_512(acc, total, rows, H, rep, D, out);
}
#pragma GCC pop_options

// The AMX-BF16 variant; call it only where the CPU has AMX-BF16 and AVX512-BF16 and livefim_attention_amx_init
// succeeded. D must be a multiple of 32 (else -1).
int livefim_attention_amx(const float *q, int64_t Q, int64_t Hkv, int64_t rep, int64_t D, const float *k, const float *v,
                          int64_t head_stride, int64_t S, const int64_t *lengths, float scale, float *out) {
  if (D % 32 != 0) return -1;
  return attention_with(attend_rows_amx, scratch_floats_amx, q, Q, Hkv, rep, D, k, v, head_stride, S, lengths, scale, out);
}
