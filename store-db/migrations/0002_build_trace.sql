-- Realisations keyed by the derivation's store path (Nix 2.35's "build trace", BuildTraceV3),
-- next to Realisations, which keys them by hash modulo as Nix 2.4-2.34 did. A realisation
-- registered through its derivation path is written under both keys when the hash is
-- computable, so clients of either generation find it.
CREATE TABLE BuildTrace (
    id          INTEGER PRIMARY KEY,
    -- Base name of the .drv ("<hash>-<name>.drv"); the .drv need not be valid.
    drv_path    TEXT NOT NULL,
    output_name TEXT NOT NULL,
    output_path INTEGER NOT NULL REFERENCES ValidPaths(id) ON DELETE CASCADE,
    -- Space-separated "keyname:base64" signatures.
    signatures  TEXT NOT NULL DEFAULT '',
    UNIQUE (drv_path, output_name)
);
CREATE INDEX BuildTraceByOutputPath ON BuildTrace(output_path);

-- Deleting a valid path cascades into Realisations; without these the cascade scans.
CREATE INDEX RealisationsByOutputPath ON Realisations(output_path);
CREATE INDEX RealisationsRefsByReference ON RealisationsRefs(reference);
