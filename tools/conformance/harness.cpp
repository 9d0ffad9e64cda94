// qvlearn conformance harness: encode one image with llama.cpp's mtmd (the public API only) and write what its
// vision tower computed, so that qvlearn's compare can judge it stage by stage.
//
//   harness --text TEXT.gguf --mmproj MMPROJ.gguf (--image FILE | --rgb IMAGE.rgb --width W --height H)
//           [--flash on|off] [--threads N] [--dump DIR] [--repeat K] [--out EMBD.npy --n-embd N] [--tokens-only]
//
// --image FILE: decoded by mtmd's own loader (mtmd_helper_bitmap_init_from_file), as llama-mtmd-cli does.
// --rgb IMAGE.rgb: W*H*3 bytes, RGB, row-major (an image decoded elsewhere).
// --tokens-only: tokenise, print "tokens N" (the image chunk's merged tokens) and stop; no encode.
// --dump DIR: every named tensor of the vision graph (ln1-0, Qcur_rope-0, ..., as clip.cpp names them) and the
//   graph inputs the nodes read (inp_raw, positions, inv_window_idx), one DIR/NAME.npy each in float32 / int32,
//   in NumPy's axis order (ggml's ne reversed). Names seen twice keep the first (a block's ffn before a DeepStack
//   merger's of the same layer). An eval callback sees them; it splits the graph at every node, so never time a
//   dumping run.
// --repeat K: encode K times more without the callback and print "encode_ms <median> <min>" (the timing run).
// --out: the image chunk's output embeddings [n_tokens, N] as float32 .npy (N: the mmproj's output width, with
//   the DeepStack features concatenated for Qwen3-VL).
// Exit status 0 on success, 1 on any failure (the reason on stderr).

#include "ggml.h"
#include "ggml-backend.h"
#include "llama.h"
#include "mtmd.h"
#include "mtmd-helper.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace {

struct dumper {
    std::string dir;
    std::set<std::string> seen;
    int n_written = 0;
};

bool write_npy(const std::string & path, const char * descr, const std::vector<int64_t> & shape, const void * data,
               size_t nbytes) {
    std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (";
    for (size_t i = 0; i < shape.size(); i++) {
        header += std::to_string(shape[i]) + (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
    }
    header += "), }";
    size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header += '\n';
    std::ofstream f(path + ".tmp", std::ios::binary);
    if (!f) {
        return false;
    }
    const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    f.write(reinterpret_cast<const char *>(magic), 8);
    const uint16_t hlen = static_cast<uint16_t>(header.size());
    f.write(reinterpret_cast<const char *>(&hlen), 2);
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    f.write(static_cast<const char *>(data), static_cast<std::streamsize>(nbytes));
    f.close();
    return f.good() && std::rename((path + ".tmp").c_str(), path.c_str()) == 0;
}

// Copy any (possibly strided) F32 / F16 / I32 tensor in host memory to a contiguous buffer.
bool save_tensor(dumper & d, const ggml_tensor * t) {
    const std::string name = ggml_get_name(t);
    // skip unnamed nodes (node_12), views of named ones ("ln1-0 (reshaped)"), weights and the window mask
    if (name.empty() || d.seen.count(name) || name.find(" (") != std::string::npos || name.rfind("node_", 0) == 0 ||
        name.rfind("v.", 0) == 0 || name.rfind("mm.", 0) == 0 || name == "window_mask") {
        return true;
    }
    if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_I32) {
        return true;
    }
    if (t->buffer && !ggml_backend_buffer_is_host(t->buffer)) {
        return true;
    }
    if (t->data == nullptr) {
        return true;
    }
    d.seen.insert(name);
    const bool is_int = t->type == GGML_TYPE_I32;
    std::vector<float> out_f;
    std::vector<int32_t> out_i;
    const int64_t n = ggml_nelements(t);
    (is_int ? out_i.reserve(n) : out_f.reserve(n));
    const char * base = static_cast<const char *>(t->data);
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++) {
        for (int64_t i2 = 0; i2 < t->ne[2]; i2++) {
            for (int64_t i1 = 0; i1 < t->ne[1]; i1++) {
                for (int64_t i0 = 0; i0 < t->ne[0]; i0++) {
                    const char * p = base + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
                    if (t->type == GGML_TYPE_F32) {
                        out_f.push_back(*reinterpret_cast<const float *>(p));
                    } else if (t->type == GGML_TYPE_F16) {
                        out_f.push_back(ggml_fp16_to_fp32(*reinterpret_cast<const ggml_fp16_t *>(p)));
                    } else {
                        out_i.push_back(*reinterpret_cast<const int32_t *>(p));
                    }
                }
            }
        }
    }
    std::vector<int64_t> shape;
    int nd = ggml_n_dims(t);
    for (int i = nd - 1; i >= 0; i--) {
        shape.push_back(t->ne[i]);
    }
    const std::string & file = name;
    const bool ok = is_int ? write_npy(d.dir + "/" + file + ".npy", "<i4", shape, out_i.data(), out_i.size() * 4)
                           : write_npy(d.dir + "/" + file + ".npy", "<f4", shape, out_f.data(), out_f.size() * 4);
    if (!ok) {
        fprintf(stderr, "harness: cannot write %s/%s.npy\n", d.dir.c_str(), file.c_str());
        return false;
    }
    d.n_written++;
    return true;
}

bool eval_cb(ggml_tensor * t, bool ask, void * user_data) {
    if (ask) {
        return true;  // every node: its data is then readable when the callback is called again
    }
    auto * d = static_cast<dumper *>(user_data);
    for (int i = 0; i < GGML_MAX_SRC; i++) {  // graph inputs are not nodes: read them where a node uses them
        const ggml_tensor * s = t->src[i];
        if (s && (s->flags & GGML_TENSOR_FLAG_INPUT)) {
            if (!save_tensor(*d, s)) {
                return false;
            }
        }
    }
    const bool ok = save_tensor(*d, t);
    // the interpolated position table (Qwen3-VL) is unnamed: it is the second operand of inp_pos_emb
    if (ok && std::string(ggml_get_name(t)) == "inp_pos_emb" && t->src[1] && t->src[1]->data != t->data) {
        ggml_tensor copy = *t->src[1];
        ggml_set_name(&copy, "inp_pos_emb.b");
        return save_tensor(*d, &copy);
    }
    return ok;
}

void die(const std::string & msg) {
    fprintf(stderr, "harness: %s\n", msg.c_str());
    exit(1);
}

void quiet_log(ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

}  // namespace

int main(int argc, char ** argv) {
    std::string text_path, mmproj_path, rgb_path, image_path, dump_dir, out_path, flash = "off";
    bool tokens_only = false;
    int width = 0, height = 0, threads = 2, repeat = 0, n_embd = 0;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                die("missing value after " + a);
            }
            return argv[++i];
        };
        if (a == "--text") text_path = next();
        else if (a == "--mmproj") mmproj_path = next();
        else if (a == "--rgb") rgb_path = next();
        else if (a == "--image") image_path = next();
        else if (a == "--tokens-only") tokens_only = true;
        else if (a == "--width") width = std::atoi(next().c_str());
        else if (a == "--height") height = std::atoi(next().c_str());
        else if (a == "--flash") flash = next();
        else if (a == "--threads") threads = std::atoi(next().c_str());
        else if (a == "--dump") dump_dir = next();
        else if (a == "--repeat") repeat = std::atoi(next().c_str());
        else if (a == "--out") out_path = next();
        else if (a == "--n-embd") n_embd = std::atoi(next().c_str());
        else die("unknown argument " + a + " (see the comment at the top of harness.cpp)");
    }
    if (text_path.empty() || mmproj_path.empty() ||
        (image_path.empty() == (rgb_path.empty() || width <= 0 || height <= 0))) {
        die("--text, --mmproj and either --image or --rgb with --width and --height are required");
    }
    if (flash != "on" && flash != "off") {
        die("--flash takes on or off, not " + flash);
    }
    std::vector<unsigned char> rgb(static_cast<size_t>(width) * height * 3);
    if (image_path.empty()) {
        std::ifstream f(rgb_path, std::ios::binary);
        if (!f.read(reinterpret_cast<char *>(rgb.data()), static_cast<std::streamsize>(rgb.size()))) {
            die("cannot read " + std::to_string(rgb.size()) + " bytes from " + rgb_path);
        }
    }
    llama_log_set(quiet_log, nullptr);
    mtmd_log_set(quiet_log, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;  // the text model only tokenizes here: the tower is what is checked
    llama_model * model = llama_model_load_from_file(text_path.c_str(), mp);
    if (!model) {
        die("cannot load the text model " + text_path);
    }

    dumper d;
    d.dir = dump_dir;
    mtmd_context_params cp = mtmd_context_params_default();
    cp.use_gpu = false;
    cp.print_timings = false;
    cp.n_threads = threads;
    cp.warmup = false;
    cp.flash_attn_type = flash == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    if (!dump_dir.empty()) {
        cp.cb_eval = eval_cb;
        cp.cb_eval_user_data = &d;
    }
    mtmd_context * ctx = mtmd_init_from_file(mmproj_path.c_str(), model, cp);
    if (!ctx) {
        die("cannot load the mmproj " + mmproj_path);
    }

    mtmd_bitmap * bmp = image_path.empty() ? mtmd_bitmap_init(width, height, rgb.data())
                                           : mtmd_helper_bitmap_init_from_file(ctx, image_path.c_str(), false,
                                                                              mtmd_helper_init_opt_default()).bitmap;
    if (!bmp) {
        die("cannot read the image " + image_path);
    }
    mtmd_input_chunks * chunks = mtmd_input_chunks_init();
    const std::string prompt = mtmd_default_marker();
    mtmd_input_text txt = {prompt.c_str(), prompt.size(), false, true};
    const mtmd_bitmap * bitmaps[1] = {bmp};
    if (mtmd_tokenize(ctx, chunks, &txt, bitmaps, 1) != 0) {
        die("mtmd_tokenize failed");
    }
    const mtmd_input_chunk * image = nullptr;
    for (size_t i = 0; i < mtmd_input_chunks_size(chunks); i++) {
        const mtmd_input_chunk * c = mtmd_input_chunks_get(chunks, i);
        if (mtmd_input_chunk_get_type(c) == MTMD_INPUT_CHUNK_TYPE_IMAGE) {
            image = c;
        }
    }
    if (!image) {
        die("the prompt gave no image chunk");
    }
    if (tokens_only) {
        printf("tokens %zu\n", mtmd_input_chunk_get_n_tokens(image));
        return 0;
    }
    if (mtmd_encode_chunk(ctx, image) != 0) {
        die("mtmd_encode_chunk failed");
    }
    const int64_t n_tokens = static_cast<int64_t>(mtmd_input_chunk_get_n_tokens(image));
    if (!out_path.empty()) {
        if (n_embd <= 0) {
            die("--out needs --n-embd (the mmproj's output width; a vocab-only text model does not know it)");
        }
        const float * embd = mtmd_get_output_embd(ctx);
        if (!write_npy(out_path, "<f4", {n_tokens, n_embd}, embd, static_cast<size_t>(n_tokens * n_embd) * 4)) {
            die("cannot write " + out_path);
        }
    }
    if (!dump_dir.empty()) {
        printf("dumped %d tensors to %s\n", d.n_written, dump_dir.c_str());
    }
    if (repeat > 0) {
        if (!dump_dir.empty()) {
            die("--repeat times the encoder and cannot be combined with --dump (the callback splits the graph)");
        }
        std::vector<double> ms;
        for (int r = 0; r < repeat; r++) {
            const auto t0 = std::chrono::steady_clock::now();
            if (mtmd_encode_chunk(ctx, image) != 0) {
                die("mtmd_encode_chunk failed");
            }
            ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
        std::vector<double> sorted = ms;
        std::sort(sorted.begin(), sorted.end());
        printf("encode_ms %.3f %.3f\n", sorted[sorted.size() / 2], sorted[0]);
    }
    printf("tokens %lld\n", static_cast<long long>(n_tokens));
    mtmd_input_chunks_free(chunks);
    mtmd_bitmap_free(bmp);
    mtmd_free(ctx);
    llama_model_free(model);
    return 0;
}
