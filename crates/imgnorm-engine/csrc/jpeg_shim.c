/*
 * jpeg_shim.c: the only code that calls libjpeg (libjpeg-turbo's decoder, as
 * vendored by the mozjpeg-sys crate). Owned by src/jpeg.rs, its only caller.
 *
 * libjpeg reports a fatal error by calling error_exit, which must not
 * return; its default prints and calls exit(). Every entry point here sets
 * a jmp_buf first and error_exit longjmps back to it, the pattern of
 * libjpeg's example.c. The jump never crosses a Rust frame: libjpeg is
 * only entered from these functions, and the source is jpeg_mem_src (C).
 * Warnings (corrupt data, premature end of file) are counted and the first
 * one kept, never printed.
 *
 * Decoding uses libjpeg's defaults, as OpenCV does: ISLOW integer IDCT,
 * fancy upsampling, block smoothing. Output is interleaved 8-bit: gray (1
 * channel) for 1-component files, RGB for 3 components (YCbCr or RGB),
 * and for 4 components (CMYK, YCCK) libjpeg's CMYK converted to RGB with
 * OpenCV's formula (icvCvt_CMYK2BGR_8u_C4C3R): v = k - ((255 - v) * k >> 8).
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jpeglib.h"
#include "jerror.h"

/* Progressive files with more scans than this are refused: each scan is a
 * pass over the whole coefficient buffer, so a small file with thousands of
 * tiny scans would take minutes (libjpeg-turbo's advice for untrusted input
 * is a limit of this order; ordinary progressive files have about 10). */
#define SHIM_MAX_SCANS 500

struct shim_err {
    struct jpeg_error_mgr pub; /* first: libjpeg sees a jpeg_error_mgr */
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    char warning[JMSG_LENGTH_MAX];
};

struct imgnorm_jpeg {
    struct jpeg_decompress_struct cinfo;
    struct shim_err err;
    struct jpeg_progress_mgr progress;
};

/* What the header says; filled by imgnorm_jpeg_header. */
struct imgnorm_jpeg_info {
    uint32_t width;
    uint32_t height;
    int32_t components;
    int32_t color_space; /* J_COLOR_SPACE of the file */
    int32_t progressive;
    int32_t arithmetic;
    const uint8_t *exif; /* APP1 payload after "Exif\0\0", or NULL */
    size_t exif_len;
};

static void shim_error_exit(j_common_ptr cinfo) {
    struct shim_err *e = (struct shim_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->message);
    longjmp(e->jump, 1);
}

static void shim_emit_message(j_common_ptr cinfo, int msg_level) {
    struct shim_err *e = (struct shim_err *)cinfo->err;
    if (msg_level < 0) {
        if (e->pub.num_warnings == 0) (*cinfo->err->format_message)(cinfo, e->warning);
        e->pub.num_warnings++;
    }
}

static void shim_output_message(j_common_ptr cinfo) { (void)cinfo; }

static void shim_progress(j_common_ptr cinfo) {
    if (!cinfo->is_decompressor) return;
    if (((j_decompress_ptr)cinfo)->input_scan_number > SHIM_MAX_SCANS) {
        struct shim_err *e = (struct shim_err *)cinfo->err;
        snprintf(e->message, sizeof e->message, "more than %d progressive scans (refused: decoding would take too long)",
                 SHIM_MAX_SCANS);
        longjmp(e->jump, 1);
    }
}

struct imgnorm_jpeg *imgnorm_jpeg_new(void) {
    struct imgnorm_jpeg *volatile j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->cinfo.err = jpeg_std_error(&j->err.pub);
    j->err.pub.error_exit = shim_error_exit;
    j->err.pub.emit_message = shim_emit_message;
    j->err.pub.output_message = shim_output_message;
    if (setjmp(j->err.jump)) {
        free(j); /* jpeg_create_decompress failed (out of memory): nothing to destroy */
        return NULL;
    }
    jpeg_create_decompress(&j->cinfo);
    j->progress.progress_monitor = shim_progress;
    j->cinfo.progress = &j->progress;
    return j;
}

void imgnorm_jpeg_free(struct imgnorm_jpeg *j) {
    if (!j) return;
    jpeg_destroy_decompress(&j->cinfo);
    free(j);
}

const char *imgnorm_jpeg_message(const struct imgnorm_jpeg *j) { return j->err.message; }

const char *imgnorm_jpeg_warning(const struct imgnorm_jpeg *j) { return j->err.warning; }

long imgnorm_jpeg_warnings(const struct imgnorm_jpeg *j) { return j->err.pub.num_warnings; }

/* Reads the header of the `len` bytes at `data`, which must stay valid until
 * imgnorm_jpeg_decode returns. `max_memory` caps libjpeg's own allocations
 * (0: no cap). Returns 0, or -1 with the reason in imgnorm_jpeg_message. */
int imgnorm_jpeg_header(struct imgnorm_jpeg *j, const uint8_t *data, size_t len, int want_exif, long max_memory,
                        struct imgnorm_jpeg_info *info) {
    j_decompress_ptr cinfo = &j->cinfo;
    memset(info, 0, sizeof *info);
    j->err.message[0] = 0;
    j->err.warning[0] = 0;
    j->err.pub.num_warnings = 0;
    if (setjmp(j->err.jump)) return -1;
    if (len == 0 || len > (size_t)(unsigned long)-1) ERREXIT(cinfo, JERR_INPUT_EMPTY);
    cinfo->mem->max_memory_to_use = max_memory;
    jpeg_mem_src(cinfo, data, (unsigned long)len);
    jpeg_save_markers(cinfo, JPEG_APP0 + 1, want_exif ? 0xFFFF : 0);
    jpeg_read_header(cinfo, TRUE);
    info->width = cinfo->image_width;
    info->height = cinfo->image_height;
    info->components = cinfo->num_components;
    info->color_space = cinfo->jpeg_color_space;
    info->progressive = cinfo->progressive_mode;
    info->arithmetic = cinfo->arith_code;
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && memcmp(m->data, "Exif\0\0", 6) == 0) {
            info->exif = m->data + 6;
            info->exif_len = m->data_length - 6;
            break;
        }
    }
    return 0;
}

/* OpenCV's icvCvt_CMYK2BGR_8u_C4C3R, writing R, G, B in that order. */
static void cmyk_to_rgb(const JSAMPLE *cmyk, uint8_t *rgb, JDIMENSION width) {
    for (JDIMENSION x = 0; x < width; x++, cmyk += 4, rgb += 3) {
        int c = cmyk[0], m = cmyk[1], y = cmyk[2], k = cmyk[3];
        rgb[0] = (uint8_t)(k - ((255 - c) * k >> 8));
        rgb[1] = (uint8_t)(k - ((255 - m) * k >> 8));
        rgb[2] = (uint8_t)(k - ((255 - y) * k >> 8));
    }
}

/* Decodes the image whose header was read into `out` (`out_len` bytes,
 * rows of width * channels bytes, channels 1 for 1-component files and 3
 * otherwise). Returns 0, or -1 with the reason in imgnorm_jpeg_message. */
int imgnorm_jpeg_decode(struct imgnorm_jpeg *j, uint8_t *out, size_t out_len) {
    j_decompress_ptr cinfo = &j->cinfo;
    if (setjmp(j->err.jump)) return -1;
    int cmyk = 0;
    switch (cinfo->num_components) {
    case 1: cinfo->out_color_space = JCS_GRAYSCALE; break;
    case 3: cinfo->out_color_space = JCS_RGB; break;
    case 4: cinfo->out_color_space = JCS_CMYK; cmyk = 1; break;
    default: ERREXIT(cinfo, JERR_CONVERSION_NOTIMPL);
    }
    jpeg_start_decompress(cinfo);
    size_t channels = cinfo->num_components == 1 ? 1 : 3;
    size_t stride = (size_t)cinfo->output_width * channels;
    if (cinfo->output_height != 0 && stride > out_len / cinfo->output_height) {
        snprintf(j->err.message, sizeof j->err.message, "output buffer of %zu bytes is too small for %ux%u", out_len,
                 cinfo->output_width, cinfo->output_height);
        return -1;
    }
    JSAMPARRAY row = NULL;
    if (cmyk) row = (*cinfo->mem->alloc_sarray)((j_common_ptr)cinfo, JPOOL_IMAGE, cinfo->output_width * 4, 1);
    while (cinfo->output_scanline < cinfo->output_height) {
        uint8_t *dst = out + (size_t)cinfo->output_scanline * stride;
        if (cmyk) {
            if (jpeg_read_scanlines(cinfo, row, 1) != 1) ERREXIT(cinfo, JERR_INPUT_EMPTY);
            cmyk_to_rgb(row[0], dst, cinfo->output_width);
        } else {
            JSAMPROW rows[16];
            JDIMENSION n = cinfo->output_height - cinfo->output_scanline;
            if (n > 16) n = 16;
            for (JDIMENSION i = 0; i < n; i++) rows[i] = dst + i * stride;
            if (jpeg_read_scanlines(cinfo, rows, n) == 0) ERREXIT(cinfo, JERR_INPUT_EMPTY);
        }
    }
    jpeg_finish_decompress(cinfo);
    return 0;
}
