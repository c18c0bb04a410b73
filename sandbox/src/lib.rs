//! Runs one Nix builder isolated (namespaces, minimal root, Landlock, seccomp). Comes with issue 4.
//!
//! Not written yet: this crate exists so the workspace has the layout of the architecture.
