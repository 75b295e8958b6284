/* The deepnet SGD update, max-norm and the bf16 copy of the weights in one pass over each weight row.
 *
 * In torch ops these are five passes over every weight (a bf16 -> fp32 copy of the gradient, the fused
 * SGD kernel, the row norms, the rescale, the bf16 copy for the next step's GEMMs): about 44 bytes per
 * weight. Here each row is read once (gradient, momentum buffer, weight) and written once (buffer,
 * weight, bf16 copy): 22 bytes per weight in bf16, 20 in fp32. A row of a 1024-wide layer is 4 KiB, so
 * the rescale after its norm reads it back from L1, not from memory.
 *
 * The arithmetic is torch._fused_sgd_'s, operation for operation (kernel.py's test checks it bit for bit):
 *   g' = fma(w, wd, g)        (only where wd != 0)
 *   D  = D * m + g'           (two roundings: no contraction; compiled with -ffp-contract=off)
 *   w  = fma(-lr, D, w)
 * then max-norm as optim.max_norm_ states it, s = min(c / |w_row|, 1), w *= s (the norm is summed in
 * double, so it may differ from torch's float reduction in its last bit), and the bf16 copy rounds to
 * nearest even, as Tensor.copy_ does.
 *
 * Work is split by rows over torch's OpenMP threads (sgd_rows says how).
 */
#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define FLUSH_DENORMALS 0x8040u /* MXCSR: flush-to-zero (bit 15) and denormals-are-zero (bit 6) */
#endif

typedef struct {
    float *w, *d;                 /* (K, rows, cols) fp32 weights and momentum buffers */
    const void *g;                /* (K, rows, cols) gradient, fp32 or bf16 (g_bf16) */
    uint16_t *low;                /* (K, rows, cols) bf16 copy of the new weights, or NULL */
    int64_t rows, cols;
    int32_t g_bf16;
    int32_t decays;               /* a weight: L2 and max-norm apply; 0 for a bias (deepnet: no_reg) */
} layer_t;

typedef struct {
    const layer_t *layers;
    int32_t n_layers, K;
    const float *lr, *m, *wd, *c; /* per model; c = inf: no max-norm */
    const int32_t *on;            /* per model: 0 leaves it to the caller's torch ops; NULL: every model */
    int64_t first, last;          /* this worker's rows, counted over all layers and models */
} job_t;

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays a quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* The update of a row: vectorisable as written (no reduction, no branch). */
#define UPDATE(G)                                                  \
    for (int64_t j = 0; j < n; j++) {                              \
        float gj = wd != 0.0f ? fmaf(w[j], wd, (G)) : (G);         \
        d[j] = d[j] * m + gj;                                      \
        w[j] = fmaf(neg, d[j], w[j]);                              \
    }

static void row(const layer_t *L, int k, int64_t r, float lr, float m, float wd, float c) {
    int64_t off = ((int64_t)k * L->rows + r) * L->cols, n = L->cols;
    float *restrict w = L->w + off, *restrict d = L->d + off;
    float neg = -lr;
    if (L->g_bf16) {
        const uint16_t *restrict g = (const uint16_t *)L->g + off;
        UPDATE(bf16_to_f32(g[j]))
    } else {
        const float *restrict g = (const float *)L->g + off;
        UPDATE(g[j])
    }
    if (!isinf(c)) {
        /* the squared norm in 16 lanes (a strict left-to-right sum would not vectorise), summed in double */
        enum { LANES = 16 };
        float part[LANES] = {0};
        int64_t j = 0;
        for (; j + LANES <= n; j += LANES)
            for (int l = 0; l < LANES; l++) part[l] += w[j + l] * w[j + l];
        double ss = 0.0;
        for (; j < n; j++) ss += (double)w[j] * w[j];
        for (int l = 0; l < LANES; l++) ss += part[l];
        float s = c / (float)sqrt(ss); /* a zero row: c / 0 = inf, which is not < 1 */
        if (s < 1.0f)
            for (j = 0; j < n; j++) w[j] *= s;
    }
    if (L->low) {
        uint16_t *restrict low = L->low + off;
        for (int64_t j = 0; j < n; j++) low[j] = f32_to_bf16(w[j]);
    }
}

/* A unit that stops receiving gradient (a dead ReLU) has its momentum buffer shrink by m every step, through
 * the denormal range, where every multiply takes a microcode assist: measured, the update ran 10x slower
 * after a few thousand steps. So this thread flushes denormals to zero while it updates, and restores its
 * mode after: values below 1.2e-38 become 0, which moves no weight of any size a net has by a single bit. */
static void work(const job_t *J) {
#ifdef FLUSH_DENORMALS
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | FLUSH_DENORMALS);
#endif
    int64_t base = 0;
    for (int32_t l = 0; l < J->n_layers; l++) {
        const layer_t *L = &J->layers[l];
        int64_t n_rows = L->rows * J->K;
        int64_t lo = J->first > base ? J->first : base, hi = J->last < base + n_rows ? J->last : base + n_rows;
        for (int64_t i = lo; i < hi; i++) {
            int k = (int)((i - base) / L->rows);
            if (J->on && !J->on[k]) continue;
            row(L, k, (i - base) % L->rows, J->lr[k], J->m[k], L->decays ? J->wd[k] : 0.0f,
                L->decays ? J->c[k] : INFINITY);
        }
        base += n_rows;
    }
#ifdef FLUSH_DENORMALS
    _mm_setcsr(csr);
#endif
}

/* The rows are split evenly over n_threads of torch's own OpenMP threads (update.c links libgomp.so.1,
 * which resolves to the copy torch has loaded: one thread pool, no second runtime spinning beside it). */
void sgd_rows(const layer_t *layers, int32_t n_layers, int32_t K, const float *lr, const float *m,
              const float *wd, const float *c, const int32_t *on, int32_t n_threads) {
    int64_t total = 0;
    for (int32_t l = 0; l < n_layers; l++) total += layers[l].rows * K;
    if (n_threads < 1) n_threads = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads)
    {
        int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
        job_t job = {layers, n_layers, K, lr, m, wd, c, on, total * t / T, total * (t + 1) / T};
        work(&job);
    }
#else
    job_t job = {layers, n_layers, K, lr, m, wd, c, on, 0, total};
    work(&job);
#endif
}
