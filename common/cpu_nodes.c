/*
 * cpu_nodes — the node classes the built-in CPU executor runs: ComfyUI's
 * model-free core image nodes and our "CA." nodes, as data for graph_validate().
 * It lives in common/ (no libvips) so the api-gateway validates presets with
 * exactly the table the job-worker executes.
 */
#include "cpu_nodes.h"

#include <math.h>
#include <string.h>

#define MAX_RESOLUTION CPU_NODES_MAX_RESOLUTION

/* ---- registry ------------------------------------------------------------ */

static const graph_type_t OUT_IMAGE[] = {GRAPH_T_IMAGE};
static const graph_type_t OUT_IMAGE_MASK[] = {GRAPH_T_IMAGE, GRAPH_T_MASK};

const char *const cpu_nodes_scale_methods[] = {"nearest-exact", "bilinear", "area",
                                               "bicubic",       "lanczos",  NULL};
const char *const cpu_nodes_crop_methods[] = {"disabled", "center", NULL};
const char *const cpu_nodes_blend_modes[] = {"normal",     "multiply",   "screen", "overlay",
                                             "soft_light", "difference", NULL};
const char *const cpu_nodes_flip_methods[] = {"x-axis: vertically", "y-axis: horizontally", NULL};
const char *const cpu_nodes_rotations[] = {"none", "90 degrees", "180 degrees", "270 degrees",
                                           NULL};
const char *const cpu_nodes_export_formats[] = {"jpeg", "png", "webp", "tiff", NULL};
const char *const cpu_nodes_positions[] = {"bottom-right", "bottom-left", "top-right",
                                           "top-left",     "center",      NULL};

#define IMG(n)                                                                                     \
    {                                                                                              \
        n, GRAPH_T_IMAGE, true, false, false, 0, 0, NULL                                           \
    }
#define INT(n, lo, hi)                                                                             \
    {                                                                                              \
        n, GRAPH_T_INT, true, true, true, lo, hi, NULL                                             \
    }
#define INT_OPT(n, lo, hi)                                                                         \
    {                                                                                              \
        n, GRAPH_T_INT, false, true, true, lo, hi, NULL                                            \
    }
#define FLT(n, lo, hi)                                                                             \
    {                                                                                              \
        n, GRAPH_T_FLOAT, true, true, true, lo, hi, NULL                                           \
    }
#define FLT_OPT(n, lo, hi)                                                                         \
    {                                                                                              \
        n, GRAPH_T_FLOAT, false, true, true, lo, hi, NULL                                          \
    }
#define COMBO(n, list)                                                                             \
    {                                                                                              \
        n, GRAPH_T_COMBO, true, false, false, 0, 0, list                                           \
    }
#define COMBO_OPT(n, list)                                                                         \
    {                                                                                              \
        n, GRAPH_T_COMBO, false, false, false, 0, 0, list                                          \
    }
#define STR_OPT(n)                                                                                 \
    {                                                                                              \
        n, GRAPH_T_STRING, false, false, false, 0, 0, NULL                                         \
    }
#define BOOL_OPT(n)                                                                                \
    {                                                                                              \
        n, GRAPH_T_BOOLEAN, false, false, false, 0, 0, NULL                                        \
    }
#define NIN(a) (sizeof(a) / sizeof(a[0]))

static const graph_input_t in_load[] = {{"image", GRAPH_T_COMBO, true, false, false, 0, 0, NULL}};
static const graph_input_t in_save[] = {IMG("images"), STR_OPT("filename_prefix")};
static const graph_input_t in_empty[] = {
    INT("width", 1, MAX_RESOLUTION), INT("height", 1, MAX_RESOLUTION),
    INT_OPT("batch_size", 1, 4096), INT_OPT("color", 0, 0xFFFFFF)};
static const graph_input_t in_scale[] = {
    IMG("image"), COMBO("upscale_method", cpu_nodes_scale_methods), INT("width", 0, MAX_RESOLUTION),
    INT("height", 0, MAX_RESOLUTION), COMBO("crop", cpu_nodes_crop_methods)};
static const graph_input_t in_scale_by[] = {
    IMG("image"), COMBO("upscale_method", cpu_nodes_scale_methods), FLT("scale_by", 0.01, 8.0)};
static const graph_input_t in_scale_total[] = {
    IMG("image"), COMBO("upscale_method", cpu_nodes_scale_methods), FLT("megapixels", 0.01, 16.0)};
static const graph_input_t in_scale_max[] = {IMG("image"),
                                             COMBO("upscale_method", cpu_nodes_scale_methods),
                                             INT("largest_size", 0, MAX_RESOLUTION)};
static const graph_input_t in_image[] = {IMG("image")};
static const graph_input_t in_blur[] = {IMG("image"), INT("blur_radius", 1, 31),
                                        FLT("sigma", 0.1, 10.0)};
static const graph_input_t in_sharpen[] = {IMG("image"), INT("sharpen_radius", 1, 31),
                                           FLT("sigma", 0.1, 10.0), FLT("alpha", 0.0, 5.0)};
static const graph_input_t in_blend[] = {IMG("image1"), IMG("image2"), FLT("blend_factor", 0, 1),
                                         COMBO("blend_mode", cpu_nodes_blend_modes)};
static const graph_input_t in_crop[] = {IMG("image"), INT("width", 1, MAX_RESOLUTION),
                                        INT("height", 1, MAX_RESOLUTION),
                                        INT("x", 0, MAX_RESOLUTION), INT("y", 0, MAX_RESOLUTION)};
static const graph_input_t in_flip[] = {IMG("image"), COMBO("flip_method", cpu_nodes_flip_methods)};
static const graph_input_t in_rotate[] = {IMG("image"), COMBO("rotation", cpu_nodes_rotations)};
static const graph_input_t in_pad[] = {IMG("image"),
                                       INT("left", 0, MAX_RESOLUTION),
                                       INT("top", 0, MAX_RESOLUTION),
                                       INT("right", 0, MAX_RESOLUTION),
                                       INT("bottom", 0, MAX_RESOLUTION),
                                       INT("feathering", 0, MAX_RESOLUTION)};
/* CA. nodes */
static const graph_input_t in_autolevels[] = {IMG("image"), FLT_OPT("clip_percent", 0, 10),
                                              FLT_OPT("strength", 0, 1)};
static const graph_input_t in_levels[] = {IMG("image"), FLT_OPT("black", 0, 1),
                                          FLT_OPT("white", 0, 1), FLT_OPT("gamma", 0.1, 10)};
static const graph_input_t in_wb[] = {IMG("image"), FLT_OPT("strength", 0, 1)};
static const graph_input_t in_exposure[] = {IMG("image"), FLT("stops", -5, 5)};
static const graph_input_t in_contrast[] = {IMG("image"), FLT("amount", -1, 1)};
static const graph_input_t in_saturation[] = {IMG("image"), FLT("amount", 0, 3)};
static const graph_input_t in_warmth[] = {IMG("image"), FLT("amount", -1, 1)};
static const graph_input_t in_vignette[] = {IMG("image"), FLT("strength", 0, 1),
                                            FLT_OPT("radius", 0, 1.5)};
static const graph_input_t in_watermark[] = {
    IMG("image"),
    {"text", GRAPH_T_STRING, true, false, false, 0, 0, NULL},
    FLT_OPT("opacity", 0, 1),
    FLT_OPT("size", 0.005, 0.5),
    COMBO_OPT("position", cpu_nodes_positions)};
static const graph_input_t in_long_edge[] = {IMG("image"), INT("long_edge", 1, MAX_RESOLUTION),
                                             BOOL_OPT("allow_upscale")};
static const graph_input_t in_export[] = {IMG("image"), COMBO("format", cpu_nodes_export_formats),
                                          INT_OPT("quality", 1, 100), BOOL_OPT("keep_icc"),
                                          BOOL_OPT("strip_location")};

static const graph_class_t CLASSES[] = {
    {"LoadImage", in_load, NIN(in_load), OUT_IMAGE_MASK, 2, false},
    {"SaveImage", in_save, NIN(in_save), NULL, 0, true},
    {"PreviewImage", in_save, NIN(in_save), NULL, 0, true},
    {"EmptyImage", in_empty, NIN(in_empty), OUT_IMAGE, 1, false},
    {"ImageScale", in_scale, NIN(in_scale), OUT_IMAGE, 1, false},
    {"ImageScaleBy", in_scale_by, NIN(in_scale_by), OUT_IMAGE, 1, false},
    {"ImageScaleToTotalPixels", in_scale_total, NIN(in_scale_total), OUT_IMAGE, 1, false},
    {"ImageScaleToMaxDimension", in_scale_max, NIN(in_scale_max), OUT_IMAGE, 1, false},
    {"ImageInvert", in_image, NIN(in_image), OUT_IMAGE, 1, false},
    {"ImageBlur", in_blur, NIN(in_blur), OUT_IMAGE, 1, false},
    {"ImageSharpen", in_sharpen, NIN(in_sharpen), OUT_IMAGE, 1, false},
    {"ImageBlend", in_blend, NIN(in_blend), OUT_IMAGE, 1, false},
    {"ImageCrop", in_crop, NIN(in_crop), OUT_IMAGE, 1, false},
    {"ImageFlip", in_flip, NIN(in_flip), OUT_IMAGE, 1, false},
    {"ImageRotate", in_rotate, NIN(in_rotate), OUT_IMAGE, 1, false},
    {"ImagePadForOutpaint", in_pad, NIN(in_pad), OUT_IMAGE_MASK, 2, false},
    {"CA.AutoLevels", in_autolevels, NIN(in_autolevels), OUT_IMAGE, 1, false},
    {"CA.Levels", in_levels, NIN(in_levels), OUT_IMAGE, 1, false},
    {"CA.WhiteBalance", in_wb, NIN(in_wb), OUT_IMAGE, 1, false},
    {"CA.Exposure", in_exposure, NIN(in_exposure), OUT_IMAGE, 1, false},
    {"CA.Contrast", in_contrast, NIN(in_contrast), OUT_IMAGE, 1, false},
    {"CA.Saturation", in_saturation, NIN(in_saturation), OUT_IMAGE, 1, false},
    {"CA.Warmth", in_warmth, NIN(in_warmth), OUT_IMAGE, 1, false},
    {"CA.Vignette", in_vignette, NIN(in_vignette), OUT_IMAGE, 1, false},
    {"CA.Watermark", in_watermark, NIN(in_watermark), OUT_IMAGE, 1, false},
    {"CA.ResizeLongEdge", in_long_edge, NIN(in_long_edge), OUT_IMAGE, 1, false},
    {"CA.Export", in_export, NIN(in_export), NULL, 0, true},
};

/* ---- sizes, for the work budget ------------------------------------------ */

static double number(const cJSON *inputs, const char *name, double def)
{
    double d = def;
    if (!graph_input_number(inputs, name, &d) || !isfinite(d)) {
        return def;
    }
    return d;
}

static double integer(const cJSON *inputs, const char *name, double def)
{
    return trunc(number(inputs, name, def));
}

/* The planner's idea of the executor's sizes (services/job-worker/cpu_*_nodes.c).
 * A loaded photo is taken to be CPU_NODES_PLAN_PHOTO_WIDTH × _HEIGHT. */
static bool node_size(const char *class_type, const cJSON *inputs, const graph_size_t *in,
                      graph_size_t *out)
{
    graph_size_t src = in != NULL ? *in : (graph_size_t){1, 1, 1};
    *out = src;
    if (strcmp(class_type, "SaveImage") == 0 || strcmp(class_type, "PreviewImage") == 0 ||
        strcmp(class_type, "CA.Export") == 0) {
        return false;
    }
    if (strcmp(class_type, "LoadImage") == 0) {
        *out = (graph_size_t){CPU_NODES_PLAN_PHOTO_WIDTH, CPU_NODES_PLAN_PHOTO_HEIGHT, 1};
    } else if (strcmp(class_type, "EmptyImage") == 0) {
        out->width = integer(inputs, "width", 512);
        out->height = integer(inputs, "height", 512);
        out->batch = fmax(1, integer(inputs, "batch_size", 1));
    } else if (strcmp(class_type, "ImageScale") == 0) {
        double w = integer(inputs, "width", 512);
        double h = integer(inputs, "height", 512);
        if (w == 0 && h != 0) {
            w = fmax(1, rint(src.width * h / fmax(1, src.height)));
        } else if (h == 0 && w != 0) {
            h = fmax(1, rint(src.height * w / fmax(1, src.width)));
        }
        if (w != 0) {
            out->width = w;
            out->height = h;
        }
    } else if (strcmp(class_type, "ImageScaleBy") == 0) {
        double s = number(inputs, "scale_by", 1);
        out->width = rint(src.width * s);
        out->height = rint(src.height * s);
    } else if (strcmp(class_type, "ImageScaleToTotalPixels") == 0) {
        double total = trunc(number(inputs, "megapixels", 1) * 1024 * 1024);
        double s = sqrt(total / fmax(1, src.width * src.height));
        out->width = rint(src.width * s);
        out->height = rint(src.height * s);
    } else if (strcmp(class_type, "ImageScaleToMaxDimension") == 0 ||
               strcmp(class_type, "CA.ResizeLongEdge") == 0) {
        bool long_edge = strcmp(class_type, "CA.ResizeLongEdge") == 0;
        double target =
            long_edge ? integer(inputs, "long_edge", 512) : integer(inputs, "largest_size", 512);
        double longest = fmax(1, fmax(src.width, src.height));
        /* ResizeLongEdge enlarges only when allowed; count it as allowed. */
        double s = target / longest;
        out->width = rint(src.width * s);
        out->height = rint(src.height * s);
    } else if (strcmp(class_type, "ImageCrop") == 0) {
        out->width = fmin(src.width, integer(inputs, "width", 512));
        out->height = fmin(src.height, integer(inputs, "height", 512));
    } else if (strcmp(class_type, "ImageRotate") == 0) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(inputs, "rotation");
        if (cJSON_IsString(r) && (strcmp(r->valuestring, "90 degrees") == 0 ||
                                  strcmp(r->valuestring, "270 degrees") == 0)) {
            out->width = src.height;
            out->height = src.width;
        }
    } else if (strcmp(class_type, "ImagePadForOutpaint") == 0) {
        out->width = src.width + integer(inputs, "left", 0) + integer(inputs, "right", 0);
        out->height = src.height + integer(inputs, "top", 0) + integer(inputs, "bottom", 0);
    }
    /* Every other node makes an image the size of its (first) input. */
    return true;
}

static const graph_registry_t REGISTRY = {CLASSES, NIN(CLASSES), node_size};

const graph_registry_t *cpu_nodes_registry(void)
{
    return &REGISTRY;
}
