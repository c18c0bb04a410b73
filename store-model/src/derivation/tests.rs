//! Golden-vector and real-Nix tests.
