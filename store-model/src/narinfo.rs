//! TODO(helper): narinfo
