// y = x @ dequant(w).T + bias with int8 weights (one fp16 scale per 32 inputs of an output
// channel) and fp32 activations, for x86-64 with AVX2, FMA and F16C. Built and loaded by
// kernels/cpu_int8.py; the torch reference there defines what this must compute.
//
// Layout (made by pack_int8_weights in cpu_int8.py), T = ceil(N / 16) tiles of 16 channels:
//   w:      [T][K][16] int8   -- tile t, input k, channel t*16 + j
//   scales: [T][K/32][16] fp16
// One k step loads 16 weights (16 bytes), widens them to two 8-float vectors, scales them and
// adds x[m, k] * w to 2 accumulators per row, for up to ROWS rows at once, so the weights are
// widened once per ROWS rows.  A decode step (1 row) is bound by reading the weights: 1 byte
// per weight instead of fp32's 4.

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "amx_tiles.h"

#define GROUP 32
#define ROWS 4
// The AVX2 int8-activation and AMX kernels ask for the weights this many bytes ahead of the group they
// multiply. With several rows a group's products take long enough that the hardware prefetcher alone fell
// behind DRAM (Zen 5, VNNI: 9 rows of an 8960x1536 projection 1.3 ms from DRAM against 0.36 ms from L3;
// with this, 0.5 ms). 4-12 KB measured alike; 1-2 KB was too close. The AMX kernel asks for each of
// its four tile streams (Xeon, 9 rows from DRAM: 19.6 -> 22.4 GB/s; 2-4 KB alike, 8-16 KB worse).
#define WEIGHT_AHEAD 4096

// The 8 cache lines (one group of one 16-channel tile) WEIGHT_AHEAD bytes past `group`.
static inline __attribute__((always_inline)) void prefetch_weights_ahead(const uint8_t *group) {
  for (int i = 0; i < 8; i++) _mm_prefetch((const char *)(group + WEIGHT_AHEAD + i * 64), _MM_HINT_T0);
}

// The VNNI kernel asks for the weights of 2+ rows into L2, further ahead. On Zen 4 (2 cores, 9 rows of an
// 8960x1536 projection from DRAM) into L1 4 KB ahead left the loads and the products in series:
// 0.70 ms, about 1 row's DRAM time (0.50) plus 9 rows' warm time (0.41). Into L2 8-16 KB ahead:
// 0.56 ms (T1 and T2 alike); a 9-row pass of the 1.5B at 1k context 108 -> 79 ms. One row (a decode
// step) keeps WEIGHT_AHEAD into L1: into L2 the 1.5B's step took 3-9% longer. The AVX2 int8-activation
// kernel lost with the L2 hint there (4 rows 0.57 -> 0.68 ms), so it keeps WEIGHT_AHEAD into L1.
#define WEIGHT_AHEAD_L2 8192
static inline __attribute__((always_inline)) void prefetch_weights_to_l2(const uint8_t *group) {
  for (int i = 0; i < 8; i++) _mm_prefetch((const char *)(group + WEIGHT_AHEAD_L2 + i * 64), _MM_HINT_T1);
}

// acc[u][r][half]: U independent sums per row over interleaved k, so that one or two rows still
// keep enough FMAs in flight (an FMA's latency is ~4 cycles; 8 chains hide it).
static inline __attribute__((always_inline)) void tile_rows(
    const float *x, int64_t K, const int8_t *wt, const uint16_t *st, int rows, int U, __m256 out[ROWS][2]) {
  __m256 acc[4][ROWS][2];
  for (int u = 0; u < 4; u++)
    for (int r = 0; r < ROWS; r++) acc[u][r][0] = acc[u][r][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < K / GROUP; g++) {
    const __m256 s0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(st + g * 16)));
    const __m256 s1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(st + g * 16 + 8)));
    const int8_t *wg = wt + g * GROUP * 16;
    const float *xg = x + g * GROUP;
    __m256 part[4][ROWS][2];  // this group's unscaled sums: one multiply by the scales per group, not per k
    for (int u = 0; u < 4; u++)
      for (int r = 0; r < ROWS; r++) part[u][r][0] = part[u][r][1] = _mm256_setzero_ps();
    for (int kk = 0; kk < GROUP; kk += U) {
#pragma GCC unroll 4
      for (int u = 0; u < 4; u++) {
        if (u < U) {
          const __m128i b = _mm_loadu_si128((const __m128i *)(wg + (kk + u) * 16));
          const __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
          const __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
#pragma GCC unroll 4
          for (int r = 0; r < ROWS; r++) {
            if (r < rows) {
              const __m256 xb = _mm256_broadcast_ss(xg + r * K + kk + u);
              part[u][r][0] = _mm256_fmadd_ps(xb, w0, part[u][r][0]);
              part[u][r][1] = _mm256_fmadd_ps(xb, w1, part[u][r][1]);
            }
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; r++) {
      if (r < rows) {
        __m256 p0 = part[0][r][0], p1 = part[0][r][1];
        for (int u = 1; u < 4; u++)
          if (u < U) p0 = _mm256_add_ps(p0, part[u][r][0]), p1 = _mm256_add_ps(p1, part[u][r][1]);
        acc[0][r][0] = _mm256_fmadd_ps(p0, s0, acc[0][r][0]);
        acc[0][r][1] = _mm256_fmadd_ps(p1, s1, acc[0][r][1]);
      }
    }
  }
  for (int r = 0; r < ROWS; r++) out[r][0] = acc[0][r][0], out[r][1] = acc[0][r][1];
}

static inline __attribute__((always_inline)) void store_rows(
    float *y, int64_t N, int64_t n0, const float *bias, int rows, __m256 acc[ROWS][2]) {
  for (int r = 0; r < rows; r++) {
    float out[16];
    _mm256_storeu_ps(out, acc[r][0]);
    _mm256_storeu_ps(out + 8, acc[r][1]);
    const int64_t width = N - n0 < 16 ? N - n0 : 16;
    for (int64_t j = 0; j < width; j++) y[r * N + n0 + j] = out[j] + (bias ? bias[n0 + j] : 0.0f);
  }
}

#define ROW_BLOCK(R, U)                                               \
  static void row_block_##R(const float *x, int64_t K, const int8_t *wt, const uint16_t *st, \
                            float *y, int64_t N, int64_t n0, const float *bias) {            \
    __m256 acc[ROWS][2];                                              \
    tile_rows(x, K, wt, st, R, U, acc);                                  \
    store_rows(y, N, n0, bias, R, acc);                               \
  }
ROW_BLOCK(1, 4)
ROW_BLOCK(2, 2)
ROW_BLOCK(3, 2)
ROW_BLOCK(4, 2)

typedef void (*row_block_fn)(const float *x, int64_t K, const int8_t *wt, const uint16_t *st, float *y, int64_t N,
                             int64_t n0, const float *bias);

// Every 16-channel tile (one OpenMP iteration each) times the rows, in blocks of up to `block` rows:
// blocks[r - 1] computes r rows. Returns 0, or -1 when K is not a multiple of GROUP.
static int run_tiles(const float *x, int64_t M, int64_t K, const int8_t *w, const uint16_t *scales, const float *bias,
                     float *y, int64_t N, int64_t block, const row_block_fn *blocks) {
  if (K % GROUP != 0) return -1;
  const int64_t tiles = (N + 15) / 16;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; t++) {
    const int8_t *wt = w + t * K * 16;
    const uint16_t *st = scales + t * (K / GROUP) * 16;
    for (int64_t m0 = 0; m0 < M; m0 += block) {
      const int64_t rows = M - m0 < block ? M - m0 : block;
      blocks[rows - 1](x + m0 * K, K, wt, st, y + m0 * N, N, t * 16, bias);
    }
  }
  return 0;
}

static const row_block_fn avx2_blocks[ROWS] = {row_block_1, row_block_2, row_block_3, row_block_4};

int livefim_int8_linear(const float *x, int64_t M, int64_t K, const int8_t *w, const uint16_t *scales,
                        const float *bias, float *y, int64_t N) {
  return run_tiles(x, M, K, w, scales, bias, y, N, ROWS, avx2_blocks);
}

// The same product with AVX-512F, for CPUs that have it: one 16-float register holds a whole tile
// row, so widening 16 weights is 2 instructions instead of 6, and 32 registers give room for 8 rows
// at once (a speculative verification pass widens each weight once instead of twice).
#pragma GCC push_options
#pragma GCC target("avx512f,fma,f16c")
#define ROWS512 8

static inline __attribute__((always_inline)) void tile_rows_512(
    const float *x, int64_t K, const int8_t *wt, const uint16_t *st, int rows, int U, __m512 out[ROWS512]) {
  __m512 acc[ROWS512];
  for (int r = 0; r < ROWS512; r++) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < K / GROUP; g++) {
    const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(st + g * 16)));
    const int8_t *wg = wt + g * GROUP * 16;
    const float *xg = x + g * GROUP;
    __m512 part[8][ROWS512];  // U * rows <= 8 chains in flight
    for (int u = 0; u < 8; u++)
      for (int r = 0; r < ROWS512; r++) part[u][r] = _mm512_setzero_ps();
    for (int kk = 0; kk < GROUP; kk += U) {
#pragma GCC unroll 8
      for (int u = 0; u < 8; u++) {
        if (u < U) {
          const __m512 w = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(wg + (kk + u) * 16))));
#pragma GCC unroll 8
          for (int r = 0; r < ROWS512; r++)
            if (r < rows) part[u][r] = _mm512_fmadd_ps(_mm512_set1_ps(xg[r * K + kk + u]), w, part[u][r]);
        }
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ROWS512; r++) {
      if (r < rows) {
        __m512 p = part[0][r];
        for (int u = 1; u < 8; u++)
          if (u < U) p = _mm512_add_ps(p, part[u][r]);
        acc[r] = _mm512_fmadd_ps(p, s, acc[r]);
      }
    }
  }
  for (int r = 0; r < ROWS512; r++) out[r] = acc[r];
}

// y[r][n0 .. n0+15] = acc[r] + bias for `rows` rows; a last tile past N stores only its channels.
static inline __attribute__((always_inline)) void store_rows_512(
    float *y, int64_t N, int64_t n0, const float *bias, int rows, const __m512 *acc) {
  const int64_t width = N - n0 < 16 ? N - n0 : 16;
  const __mmask16 lanes = (__mmask16)((1u << width) - 1u);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(lanes, bias + n0) : _mm512_setzero_ps();
  for (int r = 0; r < rows; r++) _mm512_mask_storeu_ps(y + r * N + n0, lanes, _mm512_add_ps(acc[r], b));
}

#define ROW_BLOCK_512(R, U)                                                                      \
  static void row_block_512_##R(const float *x, int64_t K, const int8_t *wt, const uint16_t *st, \
                                float *y, int64_t N, int64_t n0, const float *bias) {           \
    __m512 acc[ROWS512];                                                                         \
    tile_rows_512(x, K, wt, st, R, U, acc);                                                      \
    store_rows_512(y, N, n0, bias, R, acc);                                                      \
  }
ROW_BLOCK_512(1, 8)
ROW_BLOCK_512(2, 4)
ROW_BLOCK_512(3, 2)
ROW_BLOCK_512(4, 2)
ROW_BLOCK_512(5, 1)
ROW_BLOCK_512(6, 1)
ROW_BLOCK_512(7, 1)
ROW_BLOCK_512(8, 1)

static const row_block_fn avx512_blocks[ROWS512] = {row_block_512_1, row_block_512_2, row_block_512_3, row_block_512_4,
                                                   row_block_512_5, row_block_512_6, row_block_512_7, row_block_512_8};
#pragma GCC pop_options

// livefim_int8_linear with AVX-512F; call it only where the CPU has AVX-512F (cpu_int8.py checks).
int livefim_int8_linear_avx512(const float *x, int64_t M, int64_t K, const int8_t *w, const uint16_t *scales,
                               const float *bias, float *y, int64_t N) {
  return run_tiles(x, M, K, w, scales, bias, y, N, ROWS512, avx512_blocks);
}

// The same weights with AVX512-VNNI and int8 activations: each row of x is quantized per 32 inputs
// (scale = max|x| / 127, round half to even, as the weights are), so one vpdpbusd multiplies 4 inputs
// of 16 channels exactly in int32. Per group and row that is 8 instructions where the fp32 variant
// spends 32 widenings and 32 FMAs, so a speculative pass of 8 rows costs about what one row does:
// both are bound by reading the weights. Each row's result depends on that row alone (the int32 sums
// are exact and the groups are added in order), whatever the batch.
//
// Layout (from livefim_int8_to_vnni): w4[T][K/4][16][4] uint8 = code + 128, so channel j's lane holds
// 4 consecutive inputs. vpdpbusd takes unsigned weights times signed activations; the +128 adds
// 128 * sum(xq) over the group, subtracted once per group and row.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vnni,fma,f16c")
// 9 rows a block: a verification pass (the last token and up to 8 drafted) reads each weight once; with
// 8, the 9th row re-read every tile (Zen 4, 9 rows from DRAM: 0.58 -> 0.52 ms). 9 accumulators, 8
// weight vectors and the partial sums fit the 32 registers.
#define ROWS_VNNI 9
typedef int32_t quad32 __attribute__((may_alias, aligned(4)));

// xq[m][k] = round(x / s), s = max|x[m][g*32 .. g*32+31]| / 127 (1 for an all-zero group);
// xs[m][g] = s, xc[m][g] = 128 * sum(xq over the group).
static void quantize_rows_vnni(const float *x, int64_t M, int64_t K, int8_t *xq, float *xs, int32_t *xc) {
  const int64_t G = K / GROUP;
  for (int64_t m = 0; m < M; m++) {
    for (int64_t g = 0; g < G; g++) {
      const float *src = x + m * K + g * GROUP;
      const __m512 a = _mm512_loadu_ps(src), b = _mm512_loadu_ps(src + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
      float s = amax / 127.0f;
      if (s == 0.0f) s = 1.0f;
      const __m512 sv = _mm512_set1_ps(s), lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
      const int rounding = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
      const __m512 qa = _mm512_min_ps(lim, _mm512_max_ps(nlim, _mm512_roundscale_ps(_mm512_div_ps(a, sv), rounding)));
      const __m512 qb = _mm512_min_ps(lim, _mm512_max_ps(nlim, _mm512_roundscale_ps(_mm512_div_ps(b, sv), rounding)));
      const __m512i ia = _mm512_cvtps_epi32(qa), ib = _mm512_cvtps_epi32(qb);
      _mm_storeu_si128((__m128i *)(xq + m * K + g * GROUP), _mm512_cvtepi32_epi8(ia));
      _mm_storeu_si128((__m128i *)(xq + m * K + g * GROUP + 16), _mm512_cvtepi32_epi8(ib));
      xs[m * G + g] = s;
      xc[m * G + g] = 128 * _mm512_reduce_add_epi32(_mm512_add_epi32(ia, ib));
    }
  }
}

// Rows of x quantized for the int8-activation kernels, with `padded` >= M rows of codes (zeros past M).
typedef struct {
  int8_t *xq;
  float *xs;
  int32_t *xc;
} quantized_rows;

static void free_quantized(quantized_rows *rows) { free(rows->xq), free(rows->xs), free(rows->xc); }

// Returns 0, or -2 when memory cannot be had (nothing is left allocated then).
static int quantize_rows(const float *x, int64_t M, int64_t padded, int64_t K, quantized_rows *rows) {
  const int64_t G = K / GROUP;
  rows->xq = padded > M ? calloc((size_t)(padded * K), 1) : malloc((size_t)(M * K));
  rows->xs = malloc(sizeof(float) * (size_t)(M * G));
  rows->xc = malloc(sizeof(int32_t) * (size_t)(M * G));
  if (!rows->xq || !rows->xs || !rows->xc) {
    free_quantized(rows);
    return -2;
  }
  quantize_rows_vnni(x, M, K, rows->xq, rows->xs, rows->xc);
  return 0;
}

static inline __attribute__((always_inline)) void tile_rows_vnni(
    const int8_t *xq, const float *xs, const int32_t *xc, int64_t K, const uint8_t *wt, const uint16_t *st,
    int rows, __m512 out[ROWS_VNNI]) {
  const int64_t G = K / GROUP;
  __m512 acc[ROWS_VNNI];
  for (int r = 0; r < ROWS_VNNI; r++) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; g++) {
    const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(st + g * 16)));
    const uint8_t *wg = wt + g * GROUP * 16;
    __m512i w[8];
    if (rows == 1) prefetch_weights_ahead(wg);  // `rows` is a constant in each row block
    else prefetch_weights_to_l2(wg);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) w[i] = _mm512_loadu_si512((const void *)(wg + i * 64));
#pragma GCC unroll 9
    for (int r = 0; r < ROWS_VNNI; r++) {
      if (r < rows) {
        const quad32 *quad = (const quad32 *)(xq + r * K + g * GROUP);  // 4 inputs at a time, broadcast from memory
        __m512i d0 = _mm512_set1_epi32(-xc[r * G + g]), d1 = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int i = 0; i < 8; i += 2) {
          d0 = _mm512_dpbusd_epi32(d0, w[i], _mm512_set1_epi32(quad[i]));
          d1 = _mm512_dpbusd_epi32(d1, w[i + 1], _mm512_set1_epi32(quad[i + 1]));
        }
        const __m512 scale = _mm512_mul_ps(s, _mm512_set1_ps(xs[r * G + g]));
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(d0, d1)), scale, acc[r]);
      }
    }
  }
  for (int r = 0; r < ROWS_VNNI; r++) out[r] = acc[r];
}

#define ROW_BLOCK_VNNI(R)                                                                                 \
  static void row_block_vnni_##R(const int8_t *xq, const float *xs, const int32_t *xc, int64_t K,          \
                                 const uint8_t *wt, const uint16_t *st, float *y, int64_t N, int64_t n0,   \
                                 const float *bias) {                                                      \
    __m512 acc[ROWS_VNNI];                                                                                 \
    tile_rows_vnni(xq, xs, xc, K, wt, st, R, acc);                                                         \
    store_rows_512(y, N, n0, bias, R, acc);                                                                \
  }
ROW_BLOCK_VNNI(1)
ROW_BLOCK_VNNI(2)
ROW_BLOCK_VNNI(3)
ROW_BLOCK_VNNI(4)
ROW_BLOCK_VNNI(5)
ROW_BLOCK_VNNI(6)
ROW_BLOCK_VNNI(7)
ROW_BLOCK_VNNI(8)
ROW_BLOCK_VNNI(9)

typedef void (*row_block_vnni_fn)(const int8_t *xq, const float *xs, const int32_t *xc, int64_t K, const uint8_t *wt,
                                  const uint16_t *st, float *y, int64_t N, int64_t n0, const float *bias);
static const row_block_vnni_fn vnni_blocks[ROWS_VNNI] = {row_block_vnni_1, row_block_vnni_2, row_block_vnni_3,
                                                        row_block_vnni_4, row_block_vnni_5, row_block_vnni_6,
                                                        row_block_vnni_7, row_block_vnni_8, row_block_vnni_9};
#pragma GCC pop_options

// y = quantize(x) @ w4.T * scales + bias; call it only where the CPU has AVX512-VNNI (cpu_int8.py checks).
// Returns 0, -1 when K is not a multiple of GROUP, -2 when scratch memory cannot be had.
int livefim_int8_linear_vnni(const float *x, int64_t M, int64_t K, const uint8_t *w4, const uint16_t *scales,
                             const float *bias, float *y, int64_t N) {
  if (K % GROUP != 0) return -1;
  const int64_t G = K / GROUP, tiles = (N + 15) / 16;
  quantized_rows rows;
  if (quantize_rows(x, M, M, K, &rows) != 0) return -2;
  const int8_t *xq = rows.xq;
  const float *xs = rows.xs;
  const int32_t *xc = rows.xc;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; t++) {
    const uint8_t *wt = w4 + t * K * 16;
    const uint16_t *st = scales + t * G * 16;
    for (int64_t m0 = 0; m0 < M; m0 += ROWS_VNNI) {
      const int64_t rows = M - m0 < ROWS_VNNI ? M - m0 : ROWS_VNNI;
      vnni_blocks[rows - 1](xq + m0 * K, xs + m0 * G, xc + m0 * G, K, wt, st, y + m0 * N, N, t * 16, bias);
    }
  }
  free_quantized(&rows);
  return 0;
}

// The int8-activation product on plain AVX2 (no VNNI): the same integer sums as the VNNI variant, from
// vpmaddubsw + vpmaddwd. vpmaddubsw multiplies unsigned by signed bytes and adds pairs into int16,
// saturating; with |w| as the unsigned side and x carrying w's sign (vpsignb), a pair is at most
// 2 * 127 * 127 = 32258, so nothing saturates and each int32 lane is exactly sum(w * x) over 4 inputs.
// The rows are quantized with the VNNI variant's rounding and scaled in its order, so every row's
// result is the bits livefim_int8_linear_vnni gives, and depends on that row alone, whatever the batch.
// Per 4 inputs, 16 channels and row: 8 instructions for 64 products, where the fp32 variant spends
// 8 FMAs plus its share of widening the weights (BENCHMARKS.md has the measured ratio).
#define ROWS_W8A8 4
typedef int32_t quad32_avx2 __attribute__((may_alias, aligned(1)));

// quantize_rows_vnni's codes and scales for one row, with AVX2 (xc is not needed here: the weights stay signed).
static void quantize_row_avx2(const float *x, int64_t K, int8_t *xq, float *xs) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f), lim = _mm256_set1_ps(127.0f), nlim = _mm256_set1_ps(-127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t g = 0; g < K / GROUP; g++) {
    const float *src = x + g * GROUP;
    __m256 v[4], amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++) v[i] = _mm256_loadu_ps(src + 8 * i), amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v[i]));
    __m128 half = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    half = _mm_max_ps(half, _mm_movehl_ps(half, half));
    half = _mm_max_ss(half, _mm_shuffle_ps(half, half, 1));
    float s = _mm_cvtss_f32(half) / 127.0f;
    if (s == 0.0f) s = 1.0f;
    const __m256 sv = _mm256_set1_ps(s);
    __m256i q[4];
    for (int i = 0; i < 4; i++)
      q[i] = _mm256_cvtps_epi32(_mm256_min_ps(lim, _mm256_max_ps(nlim, _mm256_round_ps(_mm256_div_ps(v[i], sv),
                                                                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))));
    // packs interleave the 128-bit lanes; the permute puts the 32 codes back in input order
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i *)(xq + g * GROUP), _mm256_permutevar8x32_epi32(bytes, order));
    xs[g] = s;
  }
}

static inline __attribute__((always_inline)) void quad_w8a8_avx2(
    const int8_t *xq, int64_t K, int64_t g, int i, const uint8_t *wg, int rows, __m256i sums[ROWS_W8A8][2]) {
  const __m256i flip = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);
  const __m256i w0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(wg + i * 64)), flip);  // code + 128 -> code
  const __m256i w1 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(wg + i * 64 + 32)), flip);
  const __m256i a0 = _mm256_abs_epi8(w0), a1 = _mm256_abs_epi8(w1);
#pragma GCC unroll 4
  for (int r = 0; r < ROWS_W8A8; r++) {
    if (r < rows) {
      const __m256i xb = _mm256_set1_epi32(*(const quad32_avx2 *)(xq + r * K + g * GROUP + i * 4));
      sums[r][0] = _mm256_add_epi32(sums[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(xb, w0)), ones));
      sums[r][1] = _mm256_add_epi32(sums[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(xb, w1)), ones));
    }
  }
}

static inline __attribute__((always_inline)) void tile_rows_w8a8_avx2(
    const int8_t *xq, const float *xs, int64_t K, const uint8_t *wt, const uint16_t *st, int rows, __m256 out[ROWS_W8A8][2]) {
  const int64_t G = K / GROUP;
  __m256 acc[ROWS_W8A8][2];
  for (int r = 0; r < ROWS_W8A8; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < G; g++) {
    const uint8_t *wg = wt + g * GROUP * 16;
    prefetch_weights_ahead(wg);
    __m256i sums[ROWS_W8A8][2];
    for (int r = 0; r < ROWS_W8A8; r++) sums[r][0] = sums[r][1] = _mm256_setzero_si256();
    // 4 inputs of 16 channels at a time: channels 0-7 in one register, 8-15 in the other. Unrolled for
    // 1-2 rows; with 3-4 rows' sums live, GCC would park the unrolled products on the stack.
    if (rows <= 2) {
#pragma GCC unroll 8
      for (int i = 0; i < 8; i++) quad_w8a8_avx2(xq, K, g, i, wg, rows, sums);
    } else {
#pragma GCC unroll 2
      for (int i = 0; i < 8; i++) quad_w8a8_avx2(xq, K, g, i, wg, rows, sums);
    }
    const __m256 s0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(st + g * 16)));
    const __m256 s1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(st + g * 16 + 8)));
#pragma GCC unroll 4
    for (int r = 0; r < ROWS_W8A8; r++) {
      if (r < rows) {
        const __m256 xscale = _mm256_set1_ps(xs[r * G + g]);
        acc[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[r][0]), _mm256_mul_ps(s0, xscale), acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[r][1]), _mm256_mul_ps(s1, xscale), acc[r][1]);
      }
    }
  }
  for (int r = 0; r < ROWS_W8A8; r++) out[r][0] = acc[r][0], out[r][1] = acc[r][1];
}

#define ROW_BLOCK_W8A8(R)                                                                                      \
  static void row_block_w8a8_##R(const int8_t *xq, const float *xs, int64_t K, const uint8_t *wt, const uint16_t *st, \
                                 float *y, int64_t N, int64_t n0, const float *bias) {                          \
    __m256 acc[ROWS_W8A8][2];                                                                                   \
    tile_rows_w8a8_avx2(xq, xs, K, wt, st, R, acc);                                                             \
    store_rows(y, N, n0, bias, R, acc);                                                                         \
  }
ROW_BLOCK_W8A8(1)
ROW_BLOCK_W8A8(2)
ROW_BLOCK_W8A8(3)
ROW_BLOCK_W8A8(4)

typedef void (*row_block_w8a8_fn)(const int8_t *xq, const float *xs, int64_t K, const uint8_t *wt, const uint16_t *st,
                                  float *y, int64_t N, int64_t n0, const float *bias);
static const row_block_w8a8_fn w8a8_avx2_blocks[ROWS_W8A8] = {row_block_w8a8_1, row_block_w8a8_2, row_block_w8a8_3,
                                                             row_block_w8a8_4};

// y = quantize(x) @ w4.T * scales + bias from the "vnni" layout on any AVX2 CPU, for every batch size (it
// beats dequantize + sgemm at 129-1024 rows, BENCHMARKS.md). Rows go in chunks of W8A8_CHUNK, so a
// prefill's int8 rows stay in L2 while every tile passes over them. Returns 0, -1 when K is not a
// multiple of GROUP, -2 when scratch memory cannot be had.
#define W8A8_CHUNK 128
int livefim_int8_linear_w8a8_avx2(const float *x, int64_t M, int64_t K, const uint8_t *w4, const uint16_t *scales,
                                  const float *bias, float *y, int64_t N) {
  if (K % GROUP != 0) return -1;
  const int64_t G = K / GROUP, tiles = (N + 15) / 16;
  int8_t *xq = malloc((size_t)(M * K));
  float *xs = malloc(sizeof(float) * (size_t)(M * G));
  if (!xq || !xs) {
    free(xq), free(xs);
    return -2;
  }
#pragma omp parallel for schedule(static) if (M > 1)
  for (int64_t m = 0; m < M; m++) quantize_row_avx2(x + m * K, K, xq + m * K, xs + m * G);
  for (int64_t c0 = 0; c0 < M; c0 += W8A8_CHUNK) {
    const int64_t c1 = M - c0 < W8A8_CHUNK ? M : c0 + W8A8_CHUNK;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
      const uint8_t *wt = w4 + t * K * 16;
      const uint16_t *st = scales + t * G * 16;
      for (int64_t m0 = c0; m0 < c1; m0 += ROWS_W8A8) {
        const int64_t rows = c1 - m0 < ROWS_W8A8 ? c1 - m0 : ROWS_W8A8;
        w8a8_avx2_blocks[rows - 1](xq + m0 * K, xs + m0 * G, K, wt, st, y + m0 * N, N, t * 16, bias);
      }
    }
  }
  free(xq), free(xs);
  return 0;
}

// The same product on Intel AMX, for every batch (a decode step's one row, a verification, a prefill):
// per group of 32 inputs and 16 channels, one tdpbsud multiplies up to 16 rows of int8 activations by
// the "vnni" weights (each tile row is 4 inputs of 16 channels, 64 bytes, exactly that layout) in
// int32, where the VNNI variant spends 8 vpdpbusd per row. The int32 sums are the same integers and
// the scaling and the order of the groups are the VNNI variant's, so every row's result is
// bit-identical to livefim_int8_linear_vnni's, whatever the batch (tested): a verification pass here
// gives the logits a 1-row decode step gives there.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vnni,fma,f16c,amx-tile,amx-int8")
#define AMX_ROWS 16

// Returns 0 when Linux grants this process the AMX tile state, else -1.
int livefim_amx_init(void) { return amx_request_tiles(); }

// Tiles: 0-3 = C (rows x 16 int32, four channel tiles), 4 = A (rows x 32 int8 activations),
// 5-7 = B (8 quads x 64 weight bytes).
static void amx_configure(int rows) {
  amx_tile_config config;
  memset(&config, 0, sizeof config);
  config.palette = 1;
  for (int c = 0; c < 4; c++) config.rows[c] = (uint8_t)rows, config.colsb[c] = 64;
  config.rows[4] = (uint8_t)rows, config.colsb[4] = GROUP;
  for (int b = 5; b < 8; b++) config.rows[b] = GROUP / 4, config.colsb[b] = 64;
  _tile_loadconfig(&config);
}

// acc[r] += (sums[r] - xc[r]) * (s * xs[r]) for the first `valid` rows: the VNNI variant's arithmetic.
static inline __attribute__((always_inline)) void scale_sums_amx(
    const int32_t sums[AMX_ROWS][16], const float *xs, const int32_t *xc, int64_t G, int64_t g, __m512 s, int valid,
    __m512 *acc) {
  for (int r = 0; r < valid; r++) {
    const __m512i d = _mm512_sub_epi32(_mm512_load_si512((const void *)sums[r]), _mm512_set1_epi32(xc[r * G + g]));
    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(s, _mm512_set1_ps(xs[r * G + g])), acc[r]);
  }
}

// The configured rows of xq times one 16-channel tile; the first `valid` rows are kept.
static void tile_rows_amx(const int8_t *xq, const float *xs, const int32_t *xc, int64_t K, const uint8_t *wt,
                          const uint16_t *st, int valid, __m512 *acc) {
  const int64_t G = K / GROUP;
  int32_t sums[AMX_ROWS][16] __attribute__((aligned(64)));
  for (int r = 0; r < valid; r++) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; g++) {
    _tile_zero(0);
    _tile_loadd(4, xq + g * GROUP, K);
    _tile_loadd(5, wt + g * GROUP * 16, 64);
    _tile_dpbsud(0, 4, 5);
    _tile_stored(0, sums, 64);
    scale_sums_amx(sums, xs, xc, G, g, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(st + g * 16))), valid, acc);
  }
}

// Four neighbouring channel tiles at once: one activation tile load serves four products, and four
// independent accumulator tiles keep the matrix unit busy while the previous group is scaled.
static inline __attribute__((always_inline)) void quad_tiles_amx_rows(
    const int8_t *xq, const float *xs, const int32_t *xc, int64_t K, const uint8_t *wt, const uint16_t *st,
    const int valid, float *y, int64_t N, int64_t n0, const float *bias) {
  __m512 acc[4][AMX_ROWS];
  const int64_t G = K / GROUP, tile_bytes = K * 16, tile_scales = G * 16;
  int32_t sums[4][AMX_ROWS][16] __attribute__((aligned(64)));
  for (int j = 0; j < 4; j++)
    for (int r = 0; r < valid; r++) acc[j][r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; g++) {
    const uint8_t *wg = wt + g * GROUP * 16;
    for (int j = 0; j < 4; j++) prefetch_weights_ahead(wg + j * tile_bytes);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, xq + g * GROUP, K);
    _tile_loadd(5, wg, 64);
    _tile_dpbsud(0, 4, 5);
    _tile_loadd(6, wg + tile_bytes, 64);
    _tile_dpbsud(1, 4, 6);
    _tile_loadd(7, wg + 2 * tile_bytes, 64);
    _tile_dpbsud(2, 4, 7);
    _tile_loadd(5, wg + 3 * tile_bytes, 64);
    _tile_dpbsud(3, 4, 5);
    _tile_stored(0, sums[0], 64);
    _tile_stored(1, sums[1], 64);
    _tile_stored(2, sums[2], 64);
    _tile_stored(3, sums[3], 64);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)
      scale_sums_amx(sums[j], xs, xc, G, g, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(st + j * tile_scales + g * 16))),
                     valid, acc[j]);
  }
  for (int j = 0; j < 4; j++) store_rows_512(y, N, n0 + j * 16, bias, valid, acc[j]);
}

// quad_tiles_amx_rows compiled for each row count, so that the accumulators can live in registers.
#define QUAD_ROWS(R)                                                                                               \
  static void quad_tiles_amx_##R(const int8_t *xq, const float *xs, const int32_t *xc, int64_t K, const uint8_t *wt, \
                                 const uint16_t *st, float *y, int64_t N, int64_t n0, const float *bias) {          \
    quad_tiles_amx_rows(xq, xs, xc, K, wt, st, R, y, N, n0, bias);                                                 \
  }
QUAD_ROWS(1) QUAD_ROWS(2) QUAD_ROWS(3) QUAD_ROWS(4) QUAD_ROWS(5) QUAD_ROWS(6) QUAD_ROWS(7) QUAD_ROWS(8)
QUAD_ROWS(9) QUAD_ROWS(10) QUAD_ROWS(11) QUAD_ROWS(12) QUAD_ROWS(13) QUAD_ROWS(14) QUAD_ROWS(15) QUAD_ROWS(16)
typedef void (*quad_tiles_fn)(const int8_t *xq, const float *xs, const int32_t *xc, int64_t K, const uint8_t *wt,
                              const uint16_t *st, float *y, int64_t N, int64_t n0, const float *bias);
static const quad_tiles_fn quad_tiles_amx[AMX_ROWS] = {
    quad_tiles_amx_1, quad_tiles_amx_2,  quad_tiles_amx_3,  quad_tiles_amx_4,  quad_tiles_amx_5,  quad_tiles_amx_6,
    quad_tiles_amx_7, quad_tiles_amx_8,  quad_tiles_amx_9,  quad_tiles_amx_10, quad_tiles_amx_11, quad_tiles_amx_12,
    quad_tiles_amx_13, quad_tiles_amx_14, quad_tiles_amx_15, quad_tiles_amx_16};

// y = quantize(x) @ w4.T * scales + bias on AMX; call it only where livefim_amx_init succeeded.
// Returns 0, -1 when K is not a multiple of GROUP, -2 when scratch memory cannot be had.
int livefim_int8_linear_amx(const float *x, int64_t M, int64_t K, const uint8_t *w4, const uint16_t *scales,
                            const float *bias, float *y, int64_t N) {
  if (K % GROUP != 0) return -1;
  const int64_t G = K / GROUP, tiles = (N + 15) / 16, quads = tiles / 4;
  const int64_t padded = M <= AMX_ROWS ? M : (M + AMX_ROWS - 1) / AMX_ROWS * AMX_ROWS;  // a last block reads zeros
  quantized_rows rows;
  if (quantize_rows(x, M, padded, K, &rows) != 0) return -2;
  const int8_t *xq = rows.xq;
  const float *xs = rows.xs;
  const int32_t *xc = rows.xc;
  const int config_rows = M < AMX_ROWS ? (int)M : AMX_ROWS;
#pragma omp parallel
  {
    amx_configure(config_rows);
#pragma omp for schedule(static)
    for (int64_t u = 0; u < quads + tiles % 4; u++) {  // a unit: four tiles, or one of the last tiles % 4
      const int64_t t = u < quads ? u * 4 : quads * 4 + (u - quads);
      const uint8_t *wt = w4 + t * K * 16;
      const uint16_t *st = scales + t * G * 16;
      for (int64_t m0 = 0; m0 < M; m0 += AMX_ROWS) {
        const int valid = M - m0 < AMX_ROWS ? (int)(M - m0) : AMX_ROWS;
        if (u < quads) {
          quad_tiles_amx[valid - 1](xq + m0 * K, xs + m0 * G, xc + m0 * G, K, wt, st, y + m0 * N, N, t * 16, bias);
        } else {
          __m512 acc[AMX_ROWS];
          tile_rows_amx(xq + m0 * K, xs + m0 * G, xc + m0 * G, K, wt, st, valid, acc);
          store_rows_512(y + m0 * N, N, t * 16, bias, valid, acc);
        }
      }
    }
    _tile_release();
  }
  free_quantized(&rows);
  return 0;
}
#pragma GCC pop_options

// w4[t][k/4][j][k%4] = w[t][k][j] + 128: the tiled layout rearranged for vpdpbusd. Returns 0, or -1.
int livefim_int8_to_vnni(const int8_t *w, int64_t tiles, int64_t K, uint8_t *w4) {
  if (K % 4 != 0) return -1;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; t++)
    for (int64_t k = 0; k < K; k++)
      for (int64_t j = 0; j < 16; j++)
        w4[t * K * 16 + (k / 4) * 64 + j * 4 + k % 4] = (uint8_t)((int)w[t * K * 16 + k * 16 + j] + 128);
  return 0;
}

// out[n - n0][k] = w[n][k] * scale[n][k / 32] for channels [n0, n1), n0 a multiple of 16: the
// fp32 rows a large batch multiplies with an ordinary sgemm; `vnni` says w is in livefim_int8_to_vnni's
// layout. Returns 0, or -1 on bad arguments.
int livefim_int8_dequantize(const int8_t *w, const uint16_t *scales, int64_t K, int64_t n0, int64_t n1, float *out,
                            int vnni) {
  if (K % GROUP != 0 || n0 % 16 != 0 || n1 < n0) return -1;
#pragma omp parallel for schedule(static)
  for (int64_t t = n0 / 16; t < (n1 + 15) / 16; t++) {
    const int8_t *wt = w + t * K * 16;
    const uint16_t *st = scales + t * (K / GROUP) * 16;
    const int64_t width = n1 - t * 16 < 16 ? n1 - t * 16 : 16;
    float *rows = out + (t * 16 - n0) * K;
    for (int64_t g = 0; g < K / GROUP; g++) {
      float s[16];
      _mm256_storeu_ps(s, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(st + g * 16))));
      _mm256_storeu_ps(s + 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(st + g * 16 + 8))));
      for (int64_t k = g * GROUP; k < (g + 1) * GROUP; k++)
        for (int64_t j = 0; j < width; j++)
          rows[j * K + k] = (vnni ? (float)((int)((const uint8_t *)wt)[(k / 4) * 64 + j * 4 + k % 4] - 128)
                                  : (float)wt[k * 16 + j]) * s[j];
    }
  }
  return 0;
}

// The tiled layout from fp32 weight rows w[N][K] (K a multiple of GROUP): per 32 inputs of a channel,
// scale = fp16(max|w| / 127) (1 when the group is all zero), q = round-half-even(w / scale) clamped to
// +-127; channels past N are zero. Same rounding as pack() in cpu_int8.py, which tests hold it to.
int livefim_int8_pack(const float *w, int64_t N, int64_t K, int8_t *out, uint16_t *scales) {
  if (K % GROUP != 0) return -1;
  const int64_t tiles = (N + 15) / 16;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; t++) {
    for (int64_t j = 0; j < 16; j++) {
      const int64_t n = t * 16 + j;
      for (int64_t g = 0; g < K / GROUP; g++) {
        const float *src = w + n * K + g * GROUP;
        float amax = 0.0f;
        if (n < N)
          for (int kk = 0; kk < GROUP; kk++) amax = fmaxf(amax, fabsf(src[kk]));
        uint16_t half = _cvtss_sh(amax / 127.0f, _MM_FROUND_TO_NEAREST_INT);
        float s = _cvtsh_ss(half);
        if (s == 0.0f) half = _cvtss_sh(1.0f, _MM_FROUND_TO_NEAREST_INT), s = 1.0f;
        scales[(t * (K / GROUP) + g) * 16 + j] = half;
        for (int kk = 0; kk < GROUP; kk++) {
          float q = n < N ? nearbyintf(src[kk] / s) : 0.0f;
          q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
          out[(t * K + g * GROUP + kk) * 16 + j] = (int8_t)q;
        }
      }
    }
  }
  return 0;
}
