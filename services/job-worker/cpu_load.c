/*
 * cpu_load — the front door for untrusted images: the format from the file's
 * magic bytes (never its name or MIME type), the one libvips loader of that
 * format, and the pixel and memory limits checked on the header before a
 * single pixel is decoded. cpu_exec_init() blocks every other loader. See
 * docs/image-pipeline.md, "Untrusted input".
 */
#define _GNU_SOURCE
#include "cpu_internal.h"

#include <dlfcn.h>
#include <gmodule.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The libvips loader classes the product reads; every other VipsForeignLoad
 * is blocked (cpu_exec_init). JPEG XL is left out: libvips 8.14 marks its
 * loader untrusted. */
static const char *const ALLOWED_LOADERS[] = {
    "VipsForeignLoadJpeg", "VipsForeignLoadPng",  "VipsForeignLoadWebp",
    "VipsForeignLoadTiff", "VipsForeignLoadHeif", NULL,
};

void cpu_load_block_others(void)
{
    vips_block_untrusted_set(TRUE);
    vips_operation_block_set("VipsForeignLoad", TRUE);
    for (size_t i = 0; ALLOWED_LOADERS[i] != NULL; i++) {
        vips_operation_block_set(ALLOWED_LOADERS[i], FALSE);
    }
}

/* libvips' HEIF module, opened on the first HEIF input rather than at init
 * (cpu_exec_init opens no module): libheif and its codecs (libde265, x265,
 * dav1d, aom) cost ~6 ms of start-up CPU that a JPEG never needs. Its classes
 * inherit VipsForeignLoad's block when they are first used, so the loader is
 * unblocked again once they exist. */
static gpointer open_heif_module(gpointer unused)
{
    (void)unused;
    Dl_info info;
    if (dladdr((void *)vips_init, &info) == 0 || info.dli_fname == NULL) {
        return NULL;
    }
    char *dir = g_path_get_dirname(info.dli_fname);
    char *path = g_strdup_printf("%s/vips-modules-%d.%d/vips-heif.%s", dir, vips_version(0),
                                 vips_version(1), G_MODULE_SUFFIX);
    /* the module makes itself resident (its g_module_check_init) */
    if (g_file_test(path, G_FILE_TEST_EXISTS) && g_module_open(path, G_MODULE_BIND_LAZY) == NULL) {
        g_warning("unable to load \"%s\" -- %s", path, g_module_error());
    }
    g_free(path);
    g_free(dir);
    if (g_type_from_name("VipsForeignLoadHeif") != 0) {
        vips_operation_block_set("VipsForeignLoadHeif", FALSE);
    }
    return NULL;
}

void cpu_exec_heif_ready(void)
{
    static GOnce once = G_ONCE_INIT;
    g_once(&once, open_heif_module, NULL);
}

/* ISO BMFF brands (the `ftyp` box) that libheif decodes: HEIC, HEIF, AVIF. */
static const char *const HEIF_BRANDS[] = {
    "heic", "heix", "hevc", "hevx", "heim", "heis", "hevm",
    "hevs", "mif1", "msf1", "avif", "avis", NULL,
};

cpu_exec_format_t cpu_exec_format(const void *buf, size_t len)
{
    const unsigned char *b = buf;
    if (b == NULL) {
        return CPU_FORMAT_NONE;
    }
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
        return CPU_FORMAT_JPEG;
    }
    if (len >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) {
        return CPU_FORMAT_PNG;
    }
    if (len >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0) {
        return CPU_FORMAT_WEBP;
    }
    /* Classic TIFF (42) and BigTIFF (43), either byte order. */
    if (len >= 4 && ((b[0] == 'I' && b[1] == 'I' && (b[2] == 42 || b[2] == 43) && b[3] == 0) ||
                     (b[0] == 'M' && b[1] == 'M' && b[2] == 0 && (b[3] == 42 || b[3] == 43)))) {
        return CPU_FORMAT_TIFF;
    }
    if (len >= 12 && memcmp(b + 4, "ftyp", 4) == 0) {
        for (size_t i = 0; HEIF_BRANDS[i] != NULL; i++) {
            if (memcmp(b + 8, HEIF_BRANDS[i], 4) == 0) {
                return CPU_FORMAT_HEIF;
            }
        }
    }
    return CPU_FORMAT_NONE;
}

const char *cpu_exec_format_name(cpu_exec_format_t f)
{
    switch (f) {
    case CPU_FORMAT_JPEG:
        return "JPEG";
    case CPU_FORMAT_PNG:
        return "PNG";
    case CPU_FORMAT_WEBP:
        return "WebP";
    case CPU_FORMAT_TIFF:
        return "TIFF";
    case CPU_FORMAT_HEIF:
        return "HEIF";
    case CPU_FORMAT_NONE:
        break;
    }
    return "unknown";
}

/* Every PNG chunk must fit in the file: libpng allocates a metadata chunk
 * (tEXt, zTXt, iTXt, eXIf) at its declared length before reading it, so a
 * 100-byte file that declares a 1.5 GB tEXt makes the worker ask for 1.5 GB
 * (found by fuzz_image_load). The whole file is in memory here, so a chunk
 * longer than what is left of it is a truncated or forged file. Walks the
 * chunk headers only (12 bytes each) up to IEND or the end of the buffer. */
static int png_chunks_fit(const unsigned char *b, size_t len)
{
    size_t off = 8; /* the signature */
    while (len - off >= 8) {
        uint32_t n = ((uint32_t)b[off] << 24) | ((uint32_t)b[off + 1] << 16) |
                     ((uint32_t)b[off + 2] << 8) | (uint32_t)b[off + 3];
        if (n > 0x7FFFFFFFu || (size_t)n > len - off - 8) {
            return 0;
        }
        if (memcmp(b + off + 4, "IEND", 4) == 0) {
            return 1;
        }
        off += 8 + (size_t)n;
        if (len - off < 4) {
            return 1; /* no CRC: libpng reports the truncation itself */
        }
        off += 4;
    }
    return 1;
}

/* The header of buf through the one loader of format f (lazy: nothing is
 * decoded yet). The decompression limits of libjpeg, libspng and libheif stay
 * on ("unlimited" FALSE); libvips 8.14's TIFF loader has no such option. */
static VipsImage *open_header(cpu_exec_format_t f, const void *buf, size_t len, VipsAccess access)
{
    void *b = (void *)buf; /* the loaders only read it */
    VipsImage *im = NULL;
    int rc = -1;
    switch (f) {
    case CPU_FORMAT_JPEG:
        rc = vips_jpegload_buffer(b, len, &im, "access", access, "fail_on", VIPS_FAIL_ON_ERROR,
                                  "unlimited", FALSE, NULL);
        break;
    case CPU_FORMAT_PNG:
        rc = vips_pngload_buffer(b, len, &im, "access", access, "fail_on", VIPS_FAIL_ON_ERROR,
                                 "unlimited", FALSE, NULL);
        break;
    case CPU_FORMAT_WEBP:
        rc = vips_webpload_buffer(b, len, &im, "access", access, "fail_on", VIPS_FAIL_ON_ERROR,
                                  NULL);
        break;
    case CPU_FORMAT_TIFF:
        rc = vips_tiffload_buffer(b, len, &im, "access", access, "fail_on", VIPS_FAIL_ON_ERROR,
                                  NULL);
        break;
    case CPU_FORMAT_HEIF:
        cpu_exec_heif_ready();
        rc = vips_heifload_buffer(b, len, &im, "access", access, "fail_on", VIPS_FAIL_ON_ERROR,
                                  "unlimited", FALSE, NULL);
        break;
    case CPU_FORMAT_NONE:
        break;
    }
    if (rc != 0) {
        vips_error_clear();
        return NULL;
    }
    return im;
}

cpu_exec_status_t cpu_exec_open(const void *buf, size_t len, VipsAccess access,
                                long long max_pixels, VipsImage **out, char *err, size_t errlen)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (max_pixels <= 0) {
        max_pixels = CPU_EXEC_MAX_PIXELS_DEFAULT;
    }
    cpu_exec_format_t f = cpu_exec_format(buf, len);
    if (f == CPU_FORMAT_NONE) {
        snprintf(err, errlen, "unsupported_image: not a JPEG, PNG, WebP, TIFF or HEIC image");
        return CPU_EXEC_UNSUPPORTED_IMAGE;
    }
    if (f == CPU_FORMAT_PNG && !png_chunks_fit(buf, len)) {
        snprintf(err, errlen, "unsupported_image: a PNG chunk is longer than the file");
        return CPU_EXEC_UNSUPPORTED_IMAGE;
    }
    VipsImage *im = open_header(f, buf, len, access);
    if (im == NULL) {
        snprintf(err, errlen, "unsupported_image: the %s header cannot be read",
                 cpu_exec_format_name(f));
        return CPU_EXEC_UNSUPPORTED_IMAGE;
    }
    long long w = im->Xsize;
    long long h = im->Ysize;
    long long pixels = w * h; /* libvips caps each side at 10^7: no overflow */
    int sample = (int)vips_format_sizeof(im->BandFmt);
    /* In double: a TIFF may declare thousands of bands. */
    double bytes = (double)pixels * im->Bands * sample;
    double budget = (double)max_pixels * CPU_EXEC_BYTES_PER_PIXEL;
    if (pixels > max_pixels) {
        snprintf(err, errlen,
                 "image_too_large: %s of %lldx%lld is %.1f megapixels, over the %.1f-megapixel "
                 "limit",
                 cpu_exec_format_name(f), w, h, (double)pixels / 1e6, (double)max_pixels / 1e6);
        g_object_unref(im);
        return CPU_EXEC_TOO_LARGE;
    }
    if (bytes > budget) {
        snprintf(err, errlen,
                 "image_too_large: %s of %lldx%lld with %d band(s) of %d byte(s) needs %.0f MB "
                 "decoded, over the %.0f MB budget",
                 cpu_exec_format_name(f), w, h, im->Bands, sample, bytes / 1e6, budget / 1e6);
        g_object_unref(im);
        return CPU_EXEC_TOO_LARGE;
    }
    if (out != NULL) {
        *out = im;
    } else {
        g_object_unref(im);
    }
    return CPU_EXEC_OK;
}
