# The generic builder, after nixpkgs' pkgs/stdenv/generic/setup.sh, cut down to what a GNU
# package needs: `genericBuild` runs the phases unpack, patch, configure, build, check, install
# and fixup, each overridable (set `fooPhase` to shell code, or `dontFoo` to skip it) and each
# bracketed by `runHook preFoo` / `runHook postFoo`.
#
# The tools are the host's (@initialPath@, seen in the sandbox through the daemon's
# `extra-sandbox-paths`). The sandbox of Nix 2.8 and of package chain has no /bin/sh, so the
# shebangs of the unpacked sources are pointed at @shell@ and configure and make are told to
# use it; nix-daemon 2.34 binds a /bin/sh of its own, which then goes unused.

set -eu
set -o pipefail
shopt -s nullglob

export SHELL=@shell@
export CONFIG_SHELL=$SHELL
export HOME=${HOME:-/homeless-shelter}

######################################################################
# Hooks.

# Runs hook `$1`: the function of that name, or else the shell code in the variable of that
# name, then every command added to the array `${1}Hooks` (with `addHook`).
runHook() {
    local hookName=$1
    shift
    if declare -F "$hookName" > /dev/null; then
        "$hookName" "$@"
    elif [ -n "${!hookName:-}" ]; then
        eval "${!hookName}"
    fi
    if declare -p "${hookName}Hooks" > /dev/null 2>&1; then
        local -n hooks="${hookName}Hooks"
        local hook
        for hook in "${hooks[@]}"; do
            eval "$hook"
        done
    fi
    return 0
}

# addHook postInstall 'some command': runs it after the postInstall hook.
addHook() {
    local slot="${1}Hooks"
    shift
    eval "$slot+=(\"\$@\")"
}

######################################################################
# The environment: PATH from initialPath and the inputs, their setup hooks.

addToSearchPath() {
    local var=$1 dir=$2
    [ -d "$dir" ] || return 0
    export "$var=${!var:+${!var}:}$dir"
}

PATH=
for p in @initialPath@; do
    addToSearchPath PATH "$p/bin"
done

for p in ${nativeBuildInputs:-} ${buildInputs:-} ${propagatedBuildInputs:-}; do
    addToSearchPath PATH "$p/bin"
    if [ -f "$p/nix-support/setup-hook" ]; then
        source "$p/nix-support/setup-hook"
    fi
done

# Nix passes NIX_BUILD_CORES = 0 for "as many as there are".
if [ -z "${NIX_BUILD_CORES:-}" ] || [ "$NIX_BUILD_CORES" -le 0 ]; then
    NIX_BUILD_CORES=$(nproc 2> /dev/null || echo 1)
fi
export NIX_BUILD_CORES

: "${prefix:=$out}"
: "${outputs:=out}"

######################################################################
# Helpers.

# Points `#!/bin/X` and `#!/usr/bin/env X` at the X found on PATH (nixpkgs' patchShebangs,
# which does the same towards store paths). Whether /bin/X exists in the sandbox does not
# matter (it differs between daemons), so the result is the same everywhere.
patchShebangs() {
    local f first interp args new
    find "$@" -type f -perm -0100 -print0 | while IFS= read -r -d '' f; do
        IFS= read -r first < "$f" 2> /dev/null || continue
        [[ $first == '#!'* ]] || continue
        read -r interp args <<< "${first#\#!}"
        if [ "$interp" = /usr/bin/env ]; then
            read -r interp args <<< "$args"
        fi
        case "$interp" in
            /bin/sh | sh) new=$SHELL ;;
            /bin/*) new=$(command -v "${interp#/bin/}") || continue ;;
            /*) continue ;;
            *) new=$(command -v "$interp") || continue ;;
        esac
        [ "#!$new${args:+ $args}" = "$first" ] && continue
        echo "patching shebang of $f: $first -> #!$new${args:+ $args}"
        local mode
        mode=$(stat -c %a "$f")
        { echo "#!$new${args:+ $args}"; tail -n +2 "$f"; } > "$f.patched"
        mv "$f.patched" "$f"
        chmod "$mode" "$f"
    done
}

unpackFile() {
    local s=$1
    echo "unpacking source archive $s"
    if [ -d "$s" ]; then
        cp -pr --reflink=auto -- "$s" "$(stripHash "$s")"
        return
    fi
    case "$s" in
        *.tar.gz | *.tgz | *.tar.Z) tar xzf "$s" --mode=+w --warning=no-timestamp ;;
        *.tar.bz2 | *.tbz2) tar xjf "$s" --mode=+w --warning=no-timestamp ;;
        *.tar.xz | *.txz) tar xJf "$s" --mode=+w --warning=no-timestamp ;;
        *.tar) tar xf "$s" --mode=+w --warning=no-timestamp ;;
        *) echo "do not know how to unpack $s" >&2; return 1 ;;
    esac
}

# /nix/store/<hash>-name -> name
stripHash() {
    local b
    b=$(basename "$1")
    echo "${b#*-}"
}

######################################################################
# The phases.

unpackPhase() {
    runHook preUnpack
    if [ -z "${srcs:-}" ]; then
        if [ -z "${src:-}" ]; then
            echo "variable \$src or \$srcs should point to the source" >&2
            return 1
        fi
        srcs=$src
    fi
    local before after d
    before=$(ls -A)
    for s in $srcs; do
        unpackFile "$s"
    done
    # The source root: the one directory the archives made, unless set.
    if [ -z "${sourceRoot:-}" ]; then
        after=$(ls -A)
        for d in $(comm -13 <(echo "$before") <(echo "$after")); do
            if [ -d "$d" ]; then
                if [ -n "${sourceRoot:-}" ]; then
                    echo "unpacker produced multiple directories" >&2
                    return 1
                fi
                sourceRoot=$d
            fi
        done
    fi
    if [ -z "${sourceRoot:-}" ]; then
        echo "unpacker appears to have produced no directories" >&2
        return 1
    fi
    echo "source root is $sourceRoot"
    chmod -R u+w -- "$sourceRoot"
    runHook postUnpack
}

patchPhase() {
    runHook prePatch
    patchShebangs .
    local p
    for p in ${patches:-}; do
        echo "applying patch $p"
        case "$p" in
            *.gz) gzip -dc "$p" ;;
            *.xz) xz -dc "$p" ;;
            *) cat "$p" ;;
        esac | patch ${patchFlags:--p1}
    done
    runHook postPatch
}

configurePhase() {
    runHook preConfigure
    : "${configureScript:=./configure}"
    if [ -x "$configureScript" ]; then
        echo "configure flags: --prefix=$prefix ${configureFlags:-}"
        # shellcheck disable=SC2086
        $SHELL "$configureScript" --prefix="$prefix" ${configureFlags:-}
    else
        echo "no configure script, doing nothing"
    fi
    runHook postConfigure
}

buildPhase() {
    runHook preBuild
    if [ -f Makefile ] || [ -f makefile ] || [ -f GNUmakefile ]; then
        # shellcheck disable=SC2086
        make -j"$NIX_BUILD_CORES" SHELL="$SHELL" ${makeFlags:-} ${buildFlags:-}
    else
        echo "no Makefile, doing nothing"
    fi
    runHook postBuild
}

checkPhase() {
    runHook preCheck
    # shellcheck disable=SC2086
    make -j"$NIX_BUILD_CORES" SHELL="$SHELL" ${makeFlags:-} ${checkFlags:-} ${checkTarget:-check}
    runHook postCheck
}

installPhase() {
    runHook preInstall
    mkdir -p "$prefix"
    # shellcheck disable=SC2086
    make SHELL="$SHELL" ${makeFlags:-} ${installFlags:-} ${installTargets:-install}
    runHook postInstall
}

# Strips debugging symbols from the ELF files under the usual directories and points the
# outputs' shebangs at the host's interpreters. (nixpkgs also shrinks RPATHs, moves docs to
# other outputs and compresses man pages; none of that applies to binaries linked against the
# host's libraries.)
fixupPhase() {
    runHook preFixup
    local o dir f
    for o in $outputs; do
        dir=${!o}
        [ -e "$dir" ] || continue
        if [ -z "${dontStrip:-}" ]; then
            for f in $(find "$dir"/{bin,sbin,lib,libexec} -type f 2> /dev/null); do
                if [ "$(head -c 4 "$f")" = $'\177ELF' ]; then
                    strip -S "$f" 2> /dev/null || true
                fi
            done
        fi
        patchShebangs "$dir"
    done
    runHook postFixup
}

######################################################################

showPhaseHeader() {
    echo "Running phase: $1"
}

# Runs the phases, or `$phases` when set. A phase is skipped when `dontFoo` is set (for
# `doCheck`, when it is not), and runs the variable `fooPhase` instead of the function when
# that is set.
genericBuild() {
    if [ -n "${buildCommand:-}" ]; then
        eval "$buildCommand"
        return
    fi
    local phase skip
    for phase in ${phases:-unpackPhase patchPhase configurePhase buildPhase checkPhase installPhase fixupPhase}; do
        case "$phase" in
            unpackPhase) skip=${dontUnpack:-} ;;
            patchPhase) skip=${dontPatch:-} ;;
            configurePhase) skip=${dontConfigure:-} ;;
            buildPhase) skip=${dontBuild:-} ;;
            checkPhase) [ -n "${doCheck:-}" ] && skip= || skip=1 ;;
            installPhase) skip=${dontInstall:-} ;;
            fixupPhase) skip=${dontFixup:-} ;;
            *) skip= ;;
        esac
        [ -z "$skip" ] || continue
        showPhaseHeader "$phase"
        if [ -n "${!phase:-}" ]; then
            eval "${!phase}"
        else
            "$phase"
        fi
        if [ "$phase" = unpackPhase ]; then
            cd "${sourceRoot:-.}"
        fi
    done
}
