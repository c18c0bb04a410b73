-- The metadata of package chain's store. Store paths are kept as base names
-- ("<hash>-<name>"): the store directory is a setting, not data.

CREATE TABLE ValidPaths (
    id                INTEGER PRIMARY KEY,
    path              TEXT NOT NULL UNIQUE,
    -- "sha256:<nix32>", as in narinfo files.
    nar_hash          TEXT NOT NULL,
    nar_size          INTEGER NOT NULL,
    -- Binary CIDv1 of the DAG root holding the path's contents.
    root_cid          BLOB NOT NULL,
    deriver           TEXT,
    -- Unix seconds.
    registration_time INTEGER NOT NULL,
    -- Built here (trusted without signatures).
    ultimate          INTEGER NOT NULL DEFAULT 0,
    -- Space-separated "keyname:base64" signatures.
    sigs              TEXT NOT NULL DEFAULT '',
    -- Content address ("text:sha256:..." / "fixed:r:sha256:..."), or NULL.
    ca                TEXT
);

CREATE TABLE Refs (
    referrer  INTEGER NOT NULL REFERENCES ValidPaths(id) ON DELETE CASCADE,
    reference INTEGER NOT NULL REFERENCES ValidPaths(id) ON DELETE RESTRICT,
    PRIMARY KEY (referrer, reference)
) WITHOUT ROWID;
CREATE INDEX RefsByReference ON Refs(reference);

-- Outputs of valid derivations (.drv paths), as Nix's DerivationOutputs.
CREATE TABLE DerivationOutputs (
    drv    INTEGER NOT NULL REFERENCES ValidPaths(id) ON DELETE CASCADE,
    output TEXT NOT NULL,
    path   TEXT NOT NULL,
    PRIMARY KEY (drv, output)
) WITHOUT ROWID;
CREATE INDEX DerivationOutputsByPath ON DerivationOutputs(path);

-- Realisations of content-addressed derivation outputs.
CREATE TABLE Realisations (
    id          INTEGER PRIMARY KEY,
    -- "sha256:<hash modulo>".
    drv_hash    TEXT NOT NULL,
    output_name TEXT NOT NULL,
    output_path INTEGER NOT NULL REFERENCES ValidPaths(id) ON DELETE CASCADE,
    signatures  TEXT NOT NULL DEFAULT '',
    UNIQUE (drv_hash, output_name)
);
CREATE TABLE RealisationsRefs (
    referrer  INTEGER NOT NULL REFERENCES Realisations(id) ON DELETE CASCADE,
    reference INTEGER NOT NULL REFERENCES Realisations(id) ON DELETE RESTRICT,
    PRIMARY KEY (referrer, reference)
) WITHOUT ROWID;

-- Every block some valid path uses, and which paths use it: a block is live while a live
-- path (or a pin) lists it.
CREATE TABLE Blocks (
    id   INTEGER PRIMARY KEY,
    cid  BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL
);
CREATE TABLE PathBlocks (
    path  INTEGER NOT NULL REFERENCES ValidPaths(id) ON DELETE CASCADE,
    block INTEGER NOT NULL REFERENCES Blocks(id) ON DELETE RESTRICT,
    PRIMARY KEY (path, block)
) WITHOUT ROWID;
CREATE INDEX PathBlocksByBlock ON PathBlocks(block);
