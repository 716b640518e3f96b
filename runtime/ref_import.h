/* The reference's network pickles as weights.
 *
 * The PyTorch reference saves networks with pickle.dump: a snapshot
 * (network-snapshot-*.pkl) and a released model (edm2-img512-*.pkl) are a
 * dict {ema, loss_fn, encoder, dataset_kwargs} whose `ema` is the Precond
 * module, saved through the reference's persistence wrapper (a record with
 * the class name, the module's source text, which edmc never runs, and its
 * state, including the constructor's keyword arguments), and whose tensors
 * are pickled through torch's storage reducer (each storage a small legacy
 * torch.save image inside the pickle).  The restricted reader
 * (runtime/pickle.h) decodes it; this file walks the module tree into
 * tensors under the reference's state-dict names and turns the constructor
 * arguments into the model configuration.
 *
 * torch.save's zip format, for state dicts, is read here too: the same
 * reader over its data.pkl, the storages from the archive's entries. */
#ifndef EDMC_REF_IMPORT_H
#define EDMC_REF_IMPORT_H

#include <stddef.h>

#include "compiler/status.h"
#include "runtime/safetensors.h"

/* Whether data (at least its first byte) starts like a pickle of protocol 2+. */
int edm_ref_is_pickle(const unsigned char *data, size_t len);

/* Adds every parameter and persistent buffer of the pickle's network to w,
 * in the stored dtype (F16/F32/BF16/F64) and shape, and the metadata
 * edmc.model (models/edm2.edm, found in the model folders), edmc.config (the
 * constructor's arguments as .edm values) and edmc.import (where it came
 * from).  `what` names the file in errors. */
int edm_ref_import(const unsigned char *data, size_t len, const char *what, edm_st_writer *w, edm_status *st);

/* The same from a file. */
int edm_ref_import_file(const char *path, edm_st_writer *w, edm_status *st);

/* A reference pickle (as above), or a state dict written by torch.save in its
 * zip format (`torch.save(net.state_dict(), "x.pt")`): its tensors under
 * their names, with no configuration (a state dict carries none: the model
 * is then given with --model and -D).  Told apart by their first bytes. */
int edm_ref_import_any(const char *path, edm_st_writer *w, edm_status *st);

/* Opens a weights file: safetensors as it is, or either of the above
 * imported into memory (recognised by its first bytes, so the name does not
 * matter). */
edm_st_file *edm_weights_open(const char *path, edm_status *st);

#endif
