/* The model's source as metadata (model_source.h). */
#include "config.h"

#include "runtime/model_source.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

char *edm_model_source_json(const edm_sources *src, edm_status *st)
{
    json_object *root = json_object_new_object(), *files = json_object_new_array();
    int ok = root && files && json_object_object_add(root, "files", files) == 0;
    if (!ok)
        json_object_put(files);
    for (int i = 0; ok && i < edm_sources_count(src); i++) {
        const edm_source *s = edm_sources_get(src, i);
        if (s->path[0] == '<') /* a -D snippet: the configuration holds its value */
            continue;
        json_object *f = json_object_new_object();
        json_object *path = json_object_new_string(s->path), *text = json_object_new_string_len(s->text, (int)s->size);
        ok = f && path && text && json_object_object_add(f, "path", path) == 0;
        if (!ok)
            json_object_put(path);
        ok = ok && json_object_object_add(f, "text", text) == 0;
        if (!ok)
            json_object_put(text);
        ok = ok && json_object_array_add(files, f) == 0;
        if (!ok)
            json_object_put(f);
    }
    char *out = ok ? strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN)) : NULL;
    json_object_put(root);
    if (!out)
        edm_nomem(st);
    return out;
}

int edm_model_source_add(edm_sources *src, const char *json, const char *what, edm_status *st)
{
    json_object *root = json_tokener_parse(json), *files;
    int main_index = -1;
    if (!root || !json_object_object_get_ex(root, "files", &files) || !json_object_is_type(files, json_type_array) ||
        json_object_array_length(files) == 0) {
        json_object_put(root);
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: metadata '%s' is not a list of source files", what,
                        EDM_META_SOURCE);
    }
    int rc = edm_sources_restrict(src, NULL, 0, st); /* the disk holds nothing for it */
    for (size_t i = 0; rc == 0 && i < json_object_array_length(files); i++) {
        json_object *f = json_object_array_get_idx(files, i), *path, *text;
        if (!json_object_object_get_ex(f, "path", &path) || !json_object_is_type(path, json_type_string) ||
            !json_object_object_get_ex(f, "text", &text) || !json_object_is_type(text, json_type_string)) {
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: metadata '%s': file %zu has no path or text", what,
                          EDM_META_SOURCE, i);
            break;
        }
        int before = edm_sources_count(src);
        rc = edm_sources_add_text(src, json_object_get_string(path), json_object_get_string(text),
                                  (size_t)json_object_get_string_len(text), st);
        if (rc >= 0 && i == 0)
            main_index = before;
        rc = rc < 0 ? -1 : 0;
    }
    json_object_put(root);
    return rc == 0 ? main_index : -1;
}
