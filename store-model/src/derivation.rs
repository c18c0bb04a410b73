//! TODO(helper): derivation
