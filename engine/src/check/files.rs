//! Pass: no node writes a file that a node of the graph reads (`--set input=a.mp4 --set
//! output=a.mp4`, also through a symlink or a hard link), which would overwrite the source
//! while it is being read. ffmpeg refuses the same. Files are compared by identity (device
//! and inode) where they exist, so two names for one file are caught; an output that does
//! not exist yet cannot be a file that is read.

use super::{CheckedNode, Checker};
use crate::diag::{Diagnostic, Span};
use crate::node::ParamType;
use std::path::Path;

/// One file named by a `Path` param.
struct Named<'a> {
    node: &'a str,
    param: &'static str,
    path: &'a str,
    span: Span,
}

impl Checker<'_> {
    pub(super) fn files(&mut self, nodes: &[Option<(CheckedNode, bool)>]) {
        let (mut reads, mut writes) = (vec![], vec![]);
        for (n, checked) in self.spec.nodes.iter().zip(nodes) {
            let Some((node, true)) = checked else {
                continue;
            };
            for p in node.kind.params.iter().filter(|p| p.ty == ParamType::Path) {
                let Some(path) = node.params.get(p.name).and_then(|v| v.as_str()) else {
                    continue;
                };
                let span = n
                    .params
                    .iter()
                    .find(|e| e.key.as_str() == Some(p.name))
                    .map_or(n.id_span, |e| e.raw.span);
                let named = Named {
                    node: &n.id,
                    param: p.name,
                    path,
                    span,
                };
                if node.kind.writes.contains(&p.name) {
                    writes.push(named);
                } else {
                    reads.push(named);
                }
            }
        }
        for w in &writes {
            let Some(written) = identity(Path::new(w.path)) else {
                continue;
            };
            if let Some(r) = reads
                .iter()
                .find(|r| identity(Path::new(r.path)) == Some(written))
            {
                let same = if r.path == w.path {
                    String::new()
                } else {
                    format!(" (`{}` and `{}` are one file)", w.path, r.path)
                };
                self.diags.push(
                    Diagnostic::error(
                        "output-is-input",
                        format!(
                            "node `{}` would overwrite `{}`, which node `{}` reads (param `{}`){same}",
                            w.node, w.path, r.node, r.param
                        ),
                    )
                    .at(w.span, "the output is an input")
                    .help(format!("write `{}` to another file", w.param)),
                );
            }
        }
    }
}

/// What makes two names one file: device and inode on Unix (symlinks followed, hard links
/// alike), the canonical path elsewhere; `None` for a file that does not exist.
#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(path: &Path) -> Option<std::path::PathBuf> {
    std::fs::canonicalize(path).ok()
}
