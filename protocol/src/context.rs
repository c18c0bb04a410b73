//! What an encoding depends on besides the value itself.

use pkgchain_store_model::store_path::StoreDir;

use crate::types::realisation::LegacyRealisationJson;
use crate::version::{FeatureSet, ProtocolVersion};
use crate::wire::Limits;

/// The negotiated parameters of a connection that value encodings depend on.
///
/// Nix passes the same things as its `ReadConn`/`WriteConn` plus the store directory: the
/// version decides which fields exist, the features decide some shapes, the store directory
/// turns store paths into the absolute paths on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireContext {
    /// The negotiated version (`min(client, daemon)`).
    pub version: ProtocolVersion,
    /// The negotiated features (empty below 1.38).
    pub features: FeatureSet,
    /// The store directory paths are printed in and parsed against.
    pub store_dir: StoreDir,
    /// Bounds on what decoding may allocate.
    pub limits: Limits,
    /// How to write a realisation as JSON in the encodings that predate
    /// `realisation-with-path-not-hash` (see [`LegacyRealisationJson`]).
    pub legacy_realisation_json: LegacyRealisationJson,
}

impl WireContext {
    /// A context for `version` with no features, `/nix/store`, default limits and the JSON
    /// realisation form Nix 2.35 writes.
    pub fn new(version: ProtocolVersion) -> WireContext {
        WireContext {
            version,
            features: FeatureSet::new(),
            store_dir: StoreDir::default(),
            limits: Limits::default(),
            legacy_realisation_json: LegacyRealisationJson::default(),
        }
    }

    /// The same context with `features` negotiated.
    pub fn with_features<I, S>(mut self, features: I) -> WireContext
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.features = features.into_iter().map(Into::into).collect();
        self
    }

    /// Whether the negotiated version is at least `1.minor`.
    pub fn at_least(&self, minor: u8) -> bool {
        self.version >= ProtocolVersion::new(1, minor)
    }

    /// Whether `feature` was negotiated.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.contains(feature)
    }
}
