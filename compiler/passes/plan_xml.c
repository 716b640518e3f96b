/* The execution plan as XML (fusion.h): what an ahead-of-time package
 * carries beside the graph's own XML (compiler/ir_xml.c).  The reader rebuilds
 * a plan over the graph it was made from and checks it against that graph:
 * node ids in range, roots and cores that are what the graph says, members
 * that exist, groups that cover the steps in order.  A CUDA package's plan
 * also holds its memory tables (<memory>, one per architecture and batch:
 * each stored value's alias base, lifetime, arena offset, bytes and storage
 * type), read back for edm_plan_layout_check. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlwriter.h>

#include "compiler/passes/fusion.h"

static const char *const ROLE_NAMES[] = {"prologue", "core", "epilogue"};

static int w_ok(int rc, edm_status *st)
{
    return rc < 0 ? edm_fail(st, EDM_ERR_NOMEM, EDM_NO_LOC, "writing the plan's XML failed") : 0;
}

static int w_int(xmlTextWriterPtr w, const char *key, long long v, edm_status *st)
{
    return w_ok(xmlTextWriterWriteFormatAttribute(w, BAD_CAST key, "%lld", v), st);
}

static int w_str(xmlTextWriterPtr w, const char *key, const char *v, edm_status *st)
{
    return w_ok(xmlTextWriterWriteAttribute(w, BAD_CAST key, BAD_CAST v), st);
}

/* <memory arch batch arena workspace> with a <value> per stored value. */
static int write_layout(xmlTextWriterPtr w, const edm_plan_layout *l, edm_status *st)
{
    int rc = w_ok(xmlTextWriterStartElement(w, BAD_CAST "memory"), st);
    rc = rc ? rc : w_str(w, "arch", l->arch, st);
    rc = rc ? rc : w_int(w, "batch", l->batch, st);
    rc = rc ? rc : w_int(w, "arena", l->arena_bytes, st);
    rc = rc ? rc : w_int(w, "workspace", l->workspace_bytes, st);
    static const char *const keys[] = {"base", "first", "last", "offset", "bytes"};
    for (int i = 0; i < l->nvalues && rc == 0; i++) {
        const edm_plan_layout_value *v = &l->values[i];
        const long long vals[] = {v->base, v->first, v->last, (long long)v->offset, (long long)v->bytes};
        rc = w_ok(xmlTextWriterStartElement(w, BAD_CAST "value"), st);
        rc = rc ? rc : w_int(w, "node", v->node, st);
        rc = rc ? rc : w_str(w, "dtype", edm_dtype_name(v->dtype), st);
        for (size_t k = 0; k < sizeof keys / sizeof keys[0] && rc == 0; k++)
            rc = w_int(w, keys[k], vals[k], st);
        rc = rc ? rc : w_ok(xmlTextWriterEndElement(w), st);
    }
    return rc ? rc : w_ok(xmlTextWriterEndElement(w), st);
}

int edm_plan_write_xml(FILE *out, const edm_plan *p, edm_status *st)
{
    xmlBufferPtr buf = xmlBufferCreate();
    xmlTextWriterPtr w = buf ? xmlNewTextWriterMemory(buf, 0) : NULL;
    if (!w) {
        if (buf)
            xmlBufferFree(buf);
        return edm_nomem(st);
    }
    char fuse[64];
    int rc = w_ok(xmlTextWriterSetIndent(w, 1), st);
    rc = rc ? rc : w_ok(xmlTextWriterStartDocument(w, NULL, "UTF-8", NULL), st);
    rc = rc ? rc : w_ok(xmlTextWriterStartElement(w, BAD_CAST "edmc-plan"), st);
    rc = rc ? rc : w_int(w, "version", 1, st);
    rc = rc ? rc : w_ok(xmlTextWriterWriteAttribute(w, BAD_CAST "fuse", BAD_CAST edm_fuse_str(p->opt.fuse, fuse, sizeof fuse)), st);
    rc = rc ? rc : w_int(w, "training", p->opt.training, st);
    rc = rc ? rc : w_int(w, "nodes", p->nvalues, st);
    for (int gi = 0; gi < p->ngroups && rc == 0; gi++) {
        const edm_plan_group *gr = &p->groups[gi];
        rc = w_ok(xmlTextWriterStartElement(w, BAD_CAST "group"), st);
        rc = rc ? rc : w_ok(xmlTextWriterWriteAttribute(w, BAD_CAST "name", BAD_CAST gr->name), st);
        for (int s = gr->first_step; s < gr->first_step + gr->nsteps && rc == 0; s++) {
            const edm_plan_step *step = &p->steps[s];
            rc = w_ok(xmlTextWriterStartElement(w, BAD_CAST "step"), st);
            rc = rc ? rc : w_ok(xmlTextWriterWriteAttribute(w, BAD_CAST "kind", BAD_CAST step->kind), st);
            rc = rc ? rc : w_int(w, "root", step->root, st);
            rc = rc ? rc : w_int(w, "core", step->core, st);
            for (int m = 0; m < step->nmembers && rc == 0; m++) {
                const edm_plan_member *pm = &step->members[m];
                rc = w_ok(xmlTextWriterStartElement(w, BAD_CAST "member"), st);
                rc = rc ? rc : w_int(w, "node", pm->node, st);
                rc = rc ? rc : w_ok(xmlTextWriterWriteAttribute(w, BAD_CAST "role", BAD_CAST ROLE_NAMES[pm->role]), st);
                if (pm->role == EDM_ROLE_PROLOGUE)
                    rc = rc ? rc : w_int(w, "operand", pm->operand, st);
                rc = rc ? rc : w_ok(xmlTextWriterEndElement(w), st);
            }
            rc = rc ? rc : w_ok(xmlTextWriterEndElement(w), st);
        }
        rc = rc ? rc : w_ok(xmlTextWriterEndElement(w), st);
    }
    /* the kept values (the rest follows from the steps) */
    for (int i = 0; i < p->nvalues && rc == 0; i++)
        if (p->values[i].keep && edm_op_class_of(edm_graph_node(p->g, i)->op) != EDM_CLASS_LEAF) {
            rc = w_ok(xmlTextWriterStartElement(w, BAD_CAST "keep"), st);
            rc = rc ? rc : w_int(w, "node", i, st);
            rc = rc ? rc : w_ok(xmlTextWriterEndElement(w), st);
        }
    for (int i = 0; i < p->nlayouts && rc == 0; i++)
        rc = write_layout(w, &p->layouts[i], st);
    rc = rc ? rc : w_ok(xmlTextWriterEndDocument(w), st);
    xmlFreeTextWriter(w);
    if (rc == 0) {
        size_t len = (size_t)xmlBufferLength(buf);
        if (fwrite(xmlBufferContent(buf), 1, len, out) != len || fflush(out) != 0)
            rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "writing the plan's XML failed");
    }
    xmlBufferFree(buf);
    return rc;
}

/* ------------------------------------------------------------------ reader */

typedef struct {
    const char *name;
    const edm_graph *g;
    edm_status *st;
} plan_in;

static int bad(const plan_in *r, xmlNodePtr x, const char *what)
{
    return edm_fail(r->st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "%s:%d: %s", r->name, x ? (int)xmlGetLineNo(x) : 0, what);
}

/* A 64-bit integer attribute in [lo, hi]; 0 or -1. */
static int get_i64(const plan_in *r, xmlNodePtr x, const char *key, long long lo, long long hi, int64_t *out)
{
    xmlChar *v = xmlGetProp(x, BAD_CAST key);
    char msg[160];
    if (!v) {
        snprintf(msg, sizeof msg, "<%s> has no %s", (const char *)x->name, key);
        return bad(r, x, msg);
    }
    char *end;
    errno = 0;
    long long n = strtoll((const char *)v, &end, 10);
    int ok = end != (char *)v && *end == '\0' && errno == 0 && n >= lo && n <= hi;
    xmlFree(v);
    if (!ok) {
        snprintf(msg, sizeof msg, "<%s %s>: expected an integer from %lld to %lld", (const char *)x->name, key, lo, hi);
        return bad(r, x, msg);
    }
    *out = (int64_t)n;
    return 0;
}

/* An integer attribute in [lo, hi]; 0 or -1. */
static int get_int(const plan_in *r, xmlNodePtr x, const char *key, long long lo, long long hi, int *out)
{
    int64_t v;
    if (get_i64(r, x, key, lo, hi, &v) != 0)
        return -1;
    *out = (int)v;
    return 0;
}

static int is_element(xmlNodePtr x, const char *name)
{
    return x->type == XML_ELEMENT_NODE && xmlStrcmp(x->name, BAD_CAST name) == 0;
}

/* How many children of x are <name> elements. */
static int count_elements(xmlNodePtr x, const char *name)
{
    int count = 0;
    for (xmlNodePtr c = x->children; c; c = c->next)
        count += is_element(c, name);
    return count;
}

static const char *kind_name_of(const char *s)
{
    static const char *const kinds[] = {"ew", "contract", "reduce", "op"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i], s) == 0)
            return kinds[i];
    return NULL;
}

static const char *group_name_of(const edm_graph *g, const char *s)
{
    static const char *const names[] = {"weights", "wgrad", "ew", "contract", "reduce", "op"};
    (void)g;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(names[i], s) == 0)
            return names[i];
    return NULL;
}

static int read_step(const plan_in *r, xmlNodePtr x, edm_plan *p, int n)
{
    edm_plan_step *s = &p->steps[p->nsteps];
    xmlChar *kind = xmlGetProp(x, BAD_CAST "kind");
    s->kind = kind ? kind_name_of((const char *)kind) : NULL;
    xmlFree(kind);
    if (!s->kind)
        return bad(r, x, "<step> without a known kind (ew, contract, reduce, op)");
    if (get_int(r, x, "root", 0, n - 1, &s->root) != 0 || get_int(r, x, "core", -1, n - 1, &s->core) != 0)
        return -1;
    int count = count_elements(x, "member");
    s->members = calloc((size_t)(count ? count : 1), sizeof *s->members);
    if (!s->members)
        return edm_nomem(r->st);
    p->nsteps++; /* owns its members from here on */
    int has_root = 0, cores = 0;
    for (xmlNodePtr c = x->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (!is_element(c, "member"))
            return bad(r, c, "a <step> holds <member> elements only");
        edm_plan_member *m = &s->members[s->nmembers];
        if (get_int(r, c, "node", 0, n - 1, &m->node) != 0)
            return -1;
        xmlChar *role = xmlGetProp(c, BAD_CAST "role");
        int ri = -1;
        for (int k = 0; role && k < 3; k++)
            if (strcmp((const char *)role, ROLE_NAMES[k]) == 0)
                ri = k;
        xmlFree(role);
        if (ri < 0)
            return bad(r, c, "<member> without a role (prologue, core, epilogue)");
        m->role = (edm_member_role)ri;
        if (m->role == EDM_ROLE_PROLOGUE && get_int(r, c, "operand", 0, EDM_MAX_INPUTS - 1, &m->operand) != 0)
            return -1;
        if (m->role == EDM_ROLE_CORE && m->node != s->core)
            return bad(r, c, "a core member that is not the step's core");
        if (edm_op_class_of(edm_graph_node(r->g, m->node)->op) == EDM_CLASS_LEAF)
            return bad(r, c, "a leaf cannot be a member of a step");
        has_root |= m->node == s->root;
        cores += m->role == EDM_ROLE_CORE;
        s->nmembers++;
    }
    if (!has_root)
        return bad(r, x, "a <step> must list its root among its members");
    if (cores != (s->core >= 0))
        return bad(r, x, "a <step> with a core lists it once, as its core member (and one without, none)");
    return 0;
}

/* A <memory> element into p->layouts[p->nlayouts] (counted once read). */
static int read_layout(const plan_in *r, xmlNodePtr x, edm_plan *p, int n)
{
    edm_plan_layout *l = &p->layouts[p->nlayouts];
    xmlChar *arch = xmlGetProp(x, BAD_CAST "arch");
    int fits = arch && snprintf(l->arch, sizeof l->arch, "%s", (const char *)arch) < (int)sizeof l->arch;
    xmlFree(arch);
    if (!fits)
        return bad(r, x, "<memory> without an architecture (like sm_90)");
    if (get_i64(r, x, "batch", 1, INT64_MAX, &l->batch) != 0 ||
        get_i64(r, x, "arena", 0, INT64_MAX, &l->arena_bytes) != 0 ||
        get_i64(r, x, "workspace", 0, INT64_MAX, &l->workspace_bytes) != 0)
        return -1;
    for (int i = 0; i < p->nlayouts; i++)
        if (strcmp(p->layouts[i].arch, l->arch) == 0 && p->layouts[i].batch == l->batch)
            return bad(r, x, "a second <memory> for the same architecture and batch");
    int count = count_elements(x, "value");
    l->values = calloc((size_t)(count ? count : 1), sizeof *l->values);
    if (!l->values)
        return edm_nomem(r->st);
    p->nlayouts++; /* owns its values from here on */
    for (xmlNodePtr c = x->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (!is_element(c, "value"))
            return bad(r, c, "a <memory> holds <value> elements only");
        edm_plan_layout_value *v = &l->values[l->nvalues];
        if (get_int(r, c, "node", 0, n - 1, &v->node) != 0 || get_int(r, c, "base", 0, n - 1, &v->base) != 0 ||
            get_int(r, c, "first", -1, INT_MAX, &v->first) != 0 || get_int(r, c, "last", -1, INT_MAX, &v->last) != 0 ||
            get_i64(r, c, "offset", -1, INT64_MAX, &v->offset) != 0 ||
            get_i64(r, c, "bytes", 0, INT64_MAX, &v->bytes) != 0)
            return -1;
        if (l->nvalues > 0 && v->node <= l->values[l->nvalues - 1].node)
            return bad(r, c, "the <value> elements of a <memory> are not in node order");
        xmlChar *dt = xmlGetProp(c, BAD_CAST "dtype");
        int known = dt && edm_dtype_from_name((const char *)dt, &v->dtype) == 0;
        xmlFree(dt);
        if (!known)
            return bad(r, c, "<value> without a known dtype");
        l->nvalues++;
    }
    return 0;
}

/* The plan in doc (freed here), read over g. */
static edm_plan *read_doc(xmlDocPtr doc, const char *name, const edm_graph *g, edm_status *st)
{
    plan_in r = {.name = name, .g = g, .st = st};
    if (!doc) {
        edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: not a readable XML document", name);
        return NULL;
    }
    int n = edm_graph_count(g);
    edm_plan *p = calloc(1, sizeof *p);
    xmlNodePtr root = xmlDocGetRootElement(doc);
    int rc = p ? 0 : edm_nomem(st), version = 0, nodes = 0;
    if (rc == 0 && (!root || !is_element(root, "edmc-plan")))
        rc = bad(&r, root, "the root element is not <edmc-plan>");
    if (rc == 0)
        rc = get_int(&r, root, "version", 1, 1, &version);
    if (rc == 0)
        rc = get_int(&r, root, "training", 0, 1, &p->opt.training);
    if (rc == 0 && get_int(&r, root, "nodes", 0, INT_MAX, &nodes) == 0 && nodes != n)
        rc = bad(&r, root, "the plan was made for another graph (its node count differs)");
    else if (rc == 0 && nodes != n)
        rc = -1;
    xmlChar *fuse = rc == 0 ? xmlGetProp(root, BAD_CAST "fuse") : NULL;
    if (rc == 0 && (!fuse || edm_fuse_parse((const char *)fuse, &p->opt.fuse, st) != 0))
        rc = fuse ? -1 : bad(&r, root, "<edmc-plan> has no fuse");
    xmlFree(fuse);
    int nsteps = 0, ngroups = rc == 0 ? count_elements(root, "group") : 0;
    int nlayouts = rc == 0 ? count_elements(root, "memory") : 0;
    for (xmlNodePtr c = rc == 0 ? root->children : NULL; c; c = c->next)
        if (is_element(c, "group"))
            nsteps += count_elements(c, "step");
    if (rc == 0) {
        p->g = g;
        p->nvalues = n;
        snprintf(p->source, sizeof p->source, "%s", name);
        p->steps = calloc((size_t)(nsteps ? nsteps : 1), sizeof *p->steps);
        p->groups = calloc((size_t)(ngroups ? ngroups : 1), sizeof *p->groups);
        p->values = calloc((size_t)(n ? n : 1), sizeof *p->values);
        p->layouts = calloc((size_t)(nlayouts ? nlayouts : 1), sizeof *p->layouts);
        if (!p->steps || !p->groups || !p->values || !p->layouts)
            rc = edm_nomem(st);
    }
    unsigned char *keep = rc == 0 ? calloc((size_t)(n ? n : 1), 1) : NULL;
    if (rc == 0 && !keep)
        rc = edm_nomem(st);
    for (xmlNodePtr c = rc == 0 ? root->children : NULL; c && rc == 0; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (is_element(c, "keep")) {
            int id;
            rc = get_int(&r, c, "node", 0, n - 1, &id);
            if (rc == 0)
                keep[id] = 1;
            continue;
        }
        if (is_element(c, "memory")) {
            rc = read_layout(&r, c, p, n);
            continue;
        }
        if (!is_element(c, "group")) {
            rc = bad(&r, c, "unknown element (group, keep or memory expected)");
            break;
        }
        edm_plan_group *gr = &p->groups[p->ngroups];
        xmlChar *gname = xmlGetProp(c, BAD_CAST "name");
        gr->name = gname ? group_name_of(g, (const char *)gname) : NULL;
        xmlFree(gname);
        if (!gr->name) {
            rc = bad(&r, c, "<group> without a known name");
            break;
        }
        gr->first_step = p->nsteps;
        for (xmlNodePtr s = c->children; s && rc == 0; s = s->next) {
            if (s->type != XML_ELEMENT_NODE)
                continue;
            if (!is_element(s, "step"))
                rc = bad(&r, s, "a <group> holds <step> elements only");
            else
                rc = read_step(&r, s, p, n);
            if (rc == 0)
                p->steps[p->nsteps - 1].group = p->ngroups;
        }
        gr->nsteps = p->nsteps - gr->first_step;
        if (rc == 0 && gr->nsteps == 0)
            rc = bad(&r, c, "an empty <group>");
        p->ngroups++;
    }
    xmlFreeDoc(doc);
    if (rc == 0)
        rc = edm_plan_finish(p, keep, st);
    free(keep);
    if (rc != 0) {
        edm_plan_free(p);
        return NULL;
    }
    return p;
}

edm_plan *edm_plan_read_xml(const char *path, const edm_graph *g, edm_status *st)
{
    return read_doc(xmlReadFile(path, NULL, XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR | XML_PARSE_NOWARNING), path, g,
                    st);
}

edm_plan *edm_plan_read_xml_memory(const char *data, size_t size, const char *name, const edm_graph *g,
                                   edm_status *st)
{
    if (size > INT_MAX) {
        edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: a plan of %zu bytes is too large", name, size);
        return NULL;
    }
    return read_doc(xmlReadMemory(data, (int)size, name, NULL,
                                  XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR | XML_PARSE_NOWARNING),
                    name, g, st);
}
