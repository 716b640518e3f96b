/* Printing and reading the IR: text (for people), XML (libxml2; reads back into
 * an identical graph) and Graphviz dot. */
#ifndef EDMC_IR_IO_H
#define EDMC_IR_IO_H

#include <stdio.h>

#include "compiler/ir.h"

/* One line per node:  %12 = conv2d(%3, %11) {stride=1, pad=1} : f32[N, 32, 16, 16]  @unet.enc.16x16_block0.conv_res0 (mp_conv) models/edm2.edm:40:9 */
int edm_ir_write_text(const edm_graph *g, FILE *out, edm_status *st);
int edm_ir_write_dot(const edm_graph *g, FILE *out, edm_status *st);

/* XML: <edmc-ir version="1"> <files><file index= path=/></files> <node id= op= dtype= shape="N,4,16,16" .../> </edmc-ir>.
 * The reader validates everything (ops, arity, input ids < node id, attributes,
 * shapes by re-running edm_infer_node) and reports the offending line. */
int edm_ir_write_xml(const edm_graph *g, FILE *out, edm_status *st);
edm_graph *edm_ir_read_xml_file(const char *path, edm_status *st);
edm_graph *edm_ir_read_xml_memory(const char *data, size_t size, const char *name, edm_status *st);

/* 1 when the graphs have the same nodes (ops, inputs, shapes, dtypes, attributes,
 * names, scopes, origins, positions) and the same file table. */
int edm_graph_equal(const edm_graph *a, const edm_graph *b);

#endif
