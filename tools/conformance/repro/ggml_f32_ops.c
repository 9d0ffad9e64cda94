// Two departures of llama.cpp's Qwen-VL towers reproduced with ggml alone (no model, no mtmd, no qvlearn):
// an f32 ggml_conv_2d (the patch embedding) and the f32 GELU / QuickGELU on the CPU backend, each against the
// same arithmetic in double precision. Built and run by tools/conformance/conformance.py against llama.cpp as
// released and with the patches; prints one line per op: "op <name> max_rel <x>" (relative to the largest |ref|).
//
//   cc -O2 ggml_f32_ops.c -I<llama.cpp>/ggml/include -L<build>/bin -lggml -lggml-base -lggml-cpu -lm -o ggml_f32_ops
#include "ggml.h"
#include "ggml-cpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static float lcg(unsigned * s) {  // a fixed pseudo-random sequence in [-1, 1)
    *s = *s * 1664525u + 1013904223u;
    return (float) ((*s >> 8) & 0xFFFFFF) / (float) 0x800000 - 1.0f;
}

static double max_rel(const float * got, const double * ref, int n) {
    double worst = 0, scale = 0;
    for (int i = 0; i < n; i++) scale = fmax(scale, fabs(ref[i]));
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs((double) got[i] - ref[i]));
    return worst / scale;
}

int main(void) {
    struct ggml_init_params params = {64 * 1024 * 1024, NULL, false};
    struct ggml_context * ctx = ggml_init(params);
    unsigned seed = 1;

    // the patch embedding of one 14x14 patch row: kernel [KW, KH, IC, OC] = [14, 14, 3, 64], stride 14, f32
    const int K = 14, IC = 3, OC = 64, W = 8 * K, H = 6 * K;
    struct ggml_tensor * kernel = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, K, K, IC, OC);
    struct ggml_tensor * image = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, W, H, IC, 1);
    float * kd = (float *) kernel->data, * id = (float *) image->data;
    for (int i = 0; i < K * K * IC * OC; i++) kd[i] = 0.05f * lcg(&seed);
    for (int i = 0; i < W * H * IC; i++) id[i] = 2.0f * lcg(&seed);  // normalised pixels span about [-2, 2]
    struct ggml_tensor * conv = ggml_conv_2d(ctx, kernel, image, K, K, 0, 0, 1, 1);

    const int N = 4096;
    struct ggml_tensor * x = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, N);
    float * xd = (float *) x->data;
    for (int i = 0; i < N; i++) xd[i] = 4.0f * lcg(&seed);
    struct ggml_tensor * gelu = ggml_gelu(ctx, x);
    struct ggml_tensor * quick = ggml_gelu_quick(ctx, x);

    struct ggml_cgraph * graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(graph, conv);
    ggml_build_forward_expand(graph, gelu);
    ggml_build_forward_expand(graph, quick);
    if (ggml_graph_compute_with_ctx(ctx, graph, 1) != GGML_STATUS_SUCCESS) {
        fprintf(stderr, "ggml_graph_compute_with_ctx failed\n");
        return 1;
    }

    const int OW = W / K, OH = H / K;
    double * ref = malloc(sizeof(double) * (size_t) OW * OH * OC);
    for (int oc = 0; oc < OC; oc++)
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                double acc = 0;
                for (int c = 0; c < IC; c++)
                    for (int ky = 0; ky < K; ky++)
                        for (int kx = 0; kx < K; kx++)
                            acc += (double) kd[((oc * IC + c) * K + ky) * K + kx] *
                                   (double) id[(c * H + oy * K + ky) * W + ox * K + kx];
                ref[(oc * OH + oy) * OW + ox] = acc;
            }
    printf("op conv_2d_f32 max_rel %.3e\n", max_rel((const float *) conv->data, ref, OW * OH * OC));
    free(ref);

    double * g = malloc(sizeof(double) * N), * q = malloc(sizeof(double) * N);
    for (int i = 0; i < N; i++) {
        double v = xd[i];
        g[i] = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));  // ggml_gelu: the tanh form
        q[i] = v / (1.0 + exp(-1.702 * v));
    }
    printf("op gelu_f32 max_rel %.3e\n", max_rel((const float *) gelu->data, g, N));
    printf("op gelu_quick_f32 max_rel %.3e\n", max_rel((const float *) quick->data, q, N));
    free(g);
    free(q);
    ggml_free(ctx);
    return 0;
}
