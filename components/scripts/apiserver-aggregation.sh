#!/usr/bin/env bash
# apiserver-aggregation: enable the Kubernetes API aggregation layer on one self-managed kube-apiserver.
#
# The metrics-aggregation Pulumi program installs this file and its config editor
# (apiserver-flags-editor.awk, passed as --editor) on each master (content-addressed, from stdin) and
# runs it as  [sudo -n ]bash <file> <action> [options]. It sources nothing and needs only bash,
# coreutils, awk (mawk/gawk/busybox), sed and curl (or wget).
# Interface and behaviour: components/scripts/README.md. Secrets (the proxy-client key) arrive on stdin only
# and are never printed, put in argv or in the environment. The options come from the program, which
# validated them (components/config.py); this script checks again only what keeps the host safe: paths,
# control characters and the value grammar.
set -euo pipefail
umask 022
# The C locale for the script's own pattern matching: ranges such as A-Z take in other letters elsewhere
# (not exported: the restart and log commands keep the master's locale).
LC_ALL=C
# Keep going when the SSH connection drops: finish the restart and the readiness wait instead of dying
# half-way on SIGPIPE/SIGHUP (every print below ignores write errors).
trap '' PIPE HUP

PROG=apiserver-aggregation
ACTION=""
MASTER=""
LAYOUT=""
CONFIG_PATH=""
CONFIG_LINK="" # the configured --config-path (CONFIG_PATH: its target when it is a symbolic link)
CERT_DIR=""
RESTART_CMD=""
RESTART_SET=0
READYZ_URL=""
READY_TIMEOUT=""
READY_STEADY="" # default: 3, or less to fit in a shorter --ready-timeout
STATE_DIR=/var/lib/metrics-aggregation
LOG_CMD=""
CONTAINER=kube-apiserver # static-pod: the name of the kube-apiserver container in the manifest
PREV_OWNER=- # apply: the config file's owner before this run claimed it ('' none; - not claimed)
KEY_OWNER="" # install-certs: USER:GROUP of the private key file (empty: the user running the script)
PEM_FILES=() # install-certs/remove-certs (--pem-files CA,CERT,KEY): the file names in --cert-dir
# install-certs (--ca-certs N): how many CERTIFICATE blocks lead stdin and together become the CA file.
# More than one during a CA rotation (old and new CA, a bundle); remove-certs accepts and ignores it.
CA_CERTS=1
MAX_CA_CERTS=4
FLAGS_EDITOR="" # apply/revert/check/verify (--editor): apiserver-flags-editor.awk
LOCK=""
LEGACY_LOCK=""
KEPT=""
VOLUME_NAME=aggregator-certs
FLAGS=()
REQ_KIND=() # verify: equal|file|listed, with REQ_ARG (--NAME=VALUE or --NAME) and REQ_WHY (may be empty)
REQ_ARG=()
REQ_WHY=()
CLEANUP=()

say() { printf '%s: %s: %s\n' "$PROG" "${MASTER:-?}" "$*" 2>/dev/null || true; }
warn() { printf '%s: %s: warning: %s\n' "$PROG" "${MASTER:-?}" "$*" >&2 2>/dev/null || true; }
die() {
	printf '%s: master %s: error: %s\n' "$PROG" "${MASTER:-?}" "$*" >&2 2>/dev/null || true
	exit 1
}
usage() {
	cat >&2 <<'EOF' || true
usage: apiserver-aggregation <action> [options]
  install-certs --master NAME --cert-dir DIR --pem-files CA,CERT,KEY [--key-owner USER:GROUP]
                [--ca-certs N]  (stdin: N CA certs (default 1), the proxy cert, its key)
  remove-certs  --master NAME --cert-dir DIR --pem-files CA,CERT,KEY
  apply|revert  --master NAME --layout env-file|systemd-unit|static-pod --config-path PATH
                --cert-dir DIR --restart-command CMD --readyz-url URL --ready-timeout SECONDS
                [--ready-steady-seconds N] [--state-dir DIR] [--log-command CMD] [--container NAME]
                --flag --NAME=VALUE [--flag --NAME=VALUE ...] --editor FILE
  check         the same options as apply: print what apply would change, change nothing
  verify        --master NAME --layout L --config-path PATH [--container NAME] --editor FILE  (read-only)
                [--require --NAME=VALUE] [--require-file-flag --NAME] [--require-listed --NAME=ITEM]
                (each may be followed by --why TEXT, shown with its problem)
EOF
}
cleanup() {
	local f
	for f in "${CLEANUP[@]+"${CLEANUP[@]}"}"; do rm -rf -- "$f" 2>/dev/null || true; done
}
on_exit() {
	# an install-certs that did not reach txn_commit puts back what it replaced, before its temp files go
	if [ "${TXN_OPEN:-0}" = 1 ]; then txn_rollback; fi
	drop_idle_lock
	cleanup
}
trap on_exit EXIT

now_ms() { # milliseconds since the epoch; bash 5 has it built in, older bash forks date
	local t
	if [ -n "${EPOCHREALTIME:-}" ]; then
		t=${EPOCHREALTIME/[.,]/}
		printf '%s\n' $((10#$t / 1000))
	else
		t=$(date +%s%N)
		printf '%s\n' $((t / 1000000))
	fi
}

# ---------------------------------------------------------------------------------------------- options
parse_args() {
	[ $# -ge 1 ] || {
		usage
		exit 2
	}
	ACTION=$1
	shift
	local opt val
	while [ $# -gt 0 ]; do
		opt=$1
		case $opt in
		--*=*)
			val=${opt#*=}
			opt=${opt%%=*}
			shift
			;;
		--*)
			[ $# -ge 2 ] || die "option $opt needs a value"
			val=$2
			shift 2
			;;
		*) die "unexpected argument '$opt' (options are --name VALUE)" ;;
		esac
		case $opt in
		--master) MASTER=$val ;;
		--layout) LAYOUT=$val ;;
		--config-path) CONFIG_PATH=$val ;;
		--cert-dir) CERT_DIR=$val ;;
		--restart-command)
			RESTART_CMD=$val
			RESTART_SET=1
			;;
		--readyz-url) READYZ_URL=$val ;;
		--ready-timeout) READY_TIMEOUT=$val ;;
		--ready-steady-seconds) READY_STEADY=$val ;;
		--state-dir) STATE_DIR=$val ;;
		--log-command) LOG_CMD=$val ;;
		--key-owner) KEY_OWNER=$val ;;
		--pem-files) IFS=, read -r -a PEM_FILES <<<"$val" ;;
		--ca-certs) CA_CERTS=$val ;;
		--editor) FLAGS_EDITOR=$val ;;
		--container) CONTAINER=$val ;;
		--flag) FLAGS+=("$val") ;;
		--require | --require-file-flag | --require-listed)
			case $opt in
			--require) REQ_KIND+=(equal) ;;
			--require-file-flag) REQ_KIND+=(file) ;;
			*) REQ_KIND+=(listed) ;;
			esac
			REQ_ARG+=("$val")
			REQ_WHY+=("")
			;;
		--why)
			[ ${#REQ_KIND[@]} -gt 0 ] || die "--why must follow a --require, --require-file-flag or --require-listed"
			REQ_WHY[${#REQ_KIND[@]} - 1]=$val
			;;
		*) die "unknown option $opt" ;;
		esac
	done
	[ -n "$MASTER" ] || die "--master is required"
	check_option_values
	if ! [[ $CA_CERTS =~ ^[1-9]$ ]] || [ "$CA_CERTS" -gt "$MAX_CA_CERTS" ]; then
		die "--ca-certs takes a number of CA certificates from 1 to $MAX_CA_CERTS, got $(shown_value "$CA_CERTS")"
	fi
}

# The value grammar of components/config.py (VALUE_PATTERN), checked again here as a second line of
# defence: every value that ends up in the kube-apiserver config or names a file is ONE word of these
# characters, matched whole (a space, quote, '$', '%', '#', CR, TAB or newline would be split or
# interpreted by the shell, systemd or YAML). Keep the two in step (tests/hosts/test_hardening.py);
# edit_config relies on it too (no '\\' or space in a value passed to awk with -v).
VALUE_RE='^[A-Za-z0-9_.,:/=@+*~-]+$'
VALUE_CHARS_TEXT='letters, digits and _ . , : / = @ + * ~ -'
in_grammar() { [[ $1 =~ $VALUE_RE ]]; } # VALUE
shown_value() { printf '%q' "$1"; }     # VALUE -> shell-quoted, so control characters show as escapes

# check_grammar WHAT VALUE: refuse VALUE (of option WHAT) outside the value grammar
check_grammar() {
	in_grammar "$2" && return 0
	die "$1: $(shown_value "$2") is not one word of $VALUE_CHARS_TEXT (the value grammar the stack config enforces too): refused before anything is read or written"
}

# check_option_values: the grammar for every option that names a file, a URL or the master, and for
# each --flag and requirement (its value after the first '=', then the whole word); not for
# --restart-command/--log-command (shell commands).
check_option_values() {
	local pair f name=$MASTER
	# a refused master name is not used as the prefix of the message that refuses it
	in_grammar "$name" || MASTER=""
	check_grammar --master "$name"
	for pair in "--cert-dir=$CERT_DIR" "--config-path=$CONFIG_PATH" "--readyz-url=$READYZ_URL" "--key-owner=$KEY_OWNER" \
		"--container=$CONTAINER" "--editor=$FLAGS_EDITOR"; do
		[ -n "${pair#*=}" ] && check_grammar "${pair%%=*}" "${pair#*=}"
	done
	for f in "${FLAGS[@]+"${FLAGS[@]}"}"; do
		# the editor finds a flag by its leading -- and its name before '=': anything else would be
		# added to the file again on every apply
		case $f in
		--?*=*) check_grammar "--flag ${f%%=*}" "${f#*=}" && check_grammar --flag "$f" ;;
		*) die "--flag takes --NAME=VALUE, got $(shown_value "$f")" ;;
		esac
	done
	for f in "${REQ_ARG[@]+"${REQ_ARG[@]}"}"; do
		case $f in --*=?*) check_grammar "requirement ${f%%=*}" "${f#*=}" ;; esac
		check_grammar requirement "$f"
	done
	for f in "${PEM_FILES[@]+"${PEM_FILES[@]}"}"; do
		check_grammar --pem-files "$f"
		# a plain, visible name in --cert-dir: no path (nothing written elsewhere), no hidden name (the
		# temp files are hidden)
		case $f in */* | .*) die "--pem-files: $(shown_value "$f") is not a file name in --cert-dir" ;; esac
	done
	return 0
}

need_abs() { # name value
	[ -n "$2" ] || die "$1 is required"
	case $2 in
	/*) ;;
	*) die "$1 must be an absolute path, got '$2'" ;;
	esac
	case $2 in *[[:cntrl:]]*) die "$1 contains control characters" ;; esac
}

need_editor() {
	need_abs --editor "$FLAGS_EDITOR"
	[ -f "$FLAGS_EDITOR" ] || die "the config editor $FLAGS_EDITOR is missing (the certs or verify step installs it with this script)"
}

# The layout, the restart command, the readyz URL, the timeouts and the flag names were validated by
# the program (components/config.py) before it built this command line: here they are only required.
validate_host_opts() {
	need_abs --config-path "$CONFIG_PATH"
	need_abs --cert-dir "$CERT_DIR"
	need_abs --state-dir "$STATE_DIR"
	need_editor
	local option
	for option in "--layout=$LAYOUT" "--readyz-url=$READYZ_URL" "--ready-timeout=$READY_TIMEOUT"; do
		[ -n "${option#*=}" ] || die "${option%%=*} is required"
	done
	[ "$RESTART_SET" = 1 ] || die "--restart-command is required ('' for static-pod)"
	[ -n "$READY_STEADY" ] || READY_STEADY=$((READY_TIMEOUT > 3 ? 3 : READY_TIMEOUT - 1))
	if [ "$ACTION" = apply ] || [ "$ACTION" = check ]; then
		[ ${#FLAGS[@]} -gt 0 ] || die "apply needs at least one --flag"
	fi
	command -v curl >/dev/null 2>&1 || command -v wget >/dev/null 2>&1 || die "curl (or wget) is required to poll $READYZ_URL"
}

need_pem_files() {
	[ ${#PEM_FILES[@]} = 3 ] || die "--pem-files takes three file names, CA,CERT,KEY (the order of the PEM blocks on stdin)"
	if [ "${PEM_FILES[0]}" = "${PEM_FILES[1]}" ] || [ "${PEM_FILES[0]}" = "${PEM_FILES[2]}" ] ||
		[ "${PEM_FILES[1]}" = "${PEM_FILES[2]}" ]; then die "--pem-files names the same file twice"; fi
}

# ------------------------------------------------------------------------------------------- ownership
# Which Pulumi resource (its --master name) manages a config file or a cert dir on this host. A master
# renamed in the stack is a new resource: Pulumi runs the new name's create first and the old name's
# delete last, and that delete must not undo what the new name now owns. Ownership moves on every
# successful apply/install-certs; revert/remove-certs by a former owner leave things alone.
path_key() { printf '%s' "${1#/}" | tr -c 'A-Za-z0-9._-' '_'; } # PATH -> one file name
owner_file() { # KIND PATH
	printf '%s/%s-%s.owner\n' "$STATE_DIR" "$1" "$(path_key "$2")"
}
ensure_state_dir() {
	if [ ! -d "$STATE_DIR" ]; then install -d -m 0700 "$STATE_DIR" || die "cannot create $STATE_DIR"; fi
}
claim() { # KIND PATH
	local f
	f=$(owner_file "$1" "$2")
	ensure_state_dir
	[ -f "$f" ] && [ "$(cat -- "$f")" = "$MASTER" ] && return 0
	{ printf '%s\n' "$MASTER" >"$f.tmp" && mv -f "$f.tmp" "$f"; } || {
		rm -f -- "$f.tmp"
		die "cannot write $f"
	}
}
owner_other_than_me() { # KIND PATH -> prints the other owner, fails when there is none
	local f owner
	f=$(owner_file "$1" "$2")
	[ -f "$f" ] || return 1
	owner=$(cat -- "$f")
	[ "$owner" != "$MASTER" ] || return 1
	printf '%s\n' "$owner"
}
release() { rm -f -- "$(owner_file "$1" "$2")"; } # KIND PATH

# ------------------------------------------------------------------------------------- kept originals
# What the cert dir held before the program's first write, so that remove-certs can give it back:
# STATE/certs-<dir>.kept/ (0700), keyed by the cert dir (not by --master: a renamed master's records
# are the same records) with, per file name:
#   NAME + NAME.meta   the original bytes and "MODE UID GID" (.meta is written last: it completes the record)
#   NAME.absent        the file did not exist
#   NAME.sha256        the sha256 of what install-certs wrote (one a line: during an install, the new and
#                      the previous one); written on every install, unlike the originals
# and cert-dir.created when the program created the cert dir. Originals are recorded once, before the
# first write, and dropped by remove-certs after it put everything back.
kept_dir() { printf '%s/certs-%s.kept\n' "$STATE_DIR" "$(path_key "$CERT_DIR")"; }
has_record() { [ -f "$KEPT/$1.meta" ] || [ -f "$KEPT/$1.absent" ]; } # NAME
sum_record() { printf '%s/%s.sha256\n' "$KEPT" "$1"; }                # NAME

# fsync: coreutils sync takes files (8.24+); elsewhere sync everything
fsync_paths() { timeout 60 sync -- "$@" 2>/dev/null || timeout 60 sync; }

# publish_state SRC DEST: SRC (in the kept dir) becomes DEST durably: fsync, rename, fsync the directory
publish_state() {
	fsync_paths "$1"
	mv -f -- "$1" "$2" || die "cannot write $2"
	fsync_paths "$(dirname -- "$2")"
}

# keep_original NAME: record NAME of the cert dir (a copy and its mode/owner, or "absent") before the
# first write, durably, so that even a crash right after the write leaves the way back.
keep_original() {
	local name=$1 target=$CERT_DIR/$1 meta
	if [ -f "$target" ]; then
		meta=$(stat -c '%a %u %g' -- "$target") || die "cannot stat $target"
		(umask 077 && cat -- "$target" >"$KEPT/.$name.tmp") || die "cannot keep a copy of $target in $KEPT"
		publish_state "$KEPT/.$name.tmp" "$KEPT/$name"
		(umask 077 && printf '%s\n' "$meta" >"$KEPT/.$name.meta.tmp") || die "cannot write $KEPT/$name.meta"
		publish_state "$KEPT/.$name.meta.tmp" "$KEPT/$name.meta"
		TXN_RECORDS+=("$KEPT/$name.meta" "$KEPT/$name")
		say "kept the original $target (mode uid gid: $meta) in $KEPT: remove-certs puts it back"
	else
		(umask 077 && : >"$KEPT/.$name.absent.tmp") || die "cannot write in $KEPT"
		publish_state "$KEPT/.$name.absent.tmp" "$KEPT/$name.absent"
		TXN_RECORDS+=("$KEPT/$name.absent")
	fi
}

# write_sums NAME SUM...: the checksum record of NAME (the non-empty SUMs, one a line), durably.
write_sums() {
	local name=$1 tmp sum
	shift
	tmp=$KEPT/.$name.sha256.tmp
	(
		umask 077
		for sum in "$@"; do [ -z "$sum" ] || printf '%s\n' "$sum"; done >"$tmp"
	) || die "cannot write $(sum_record "$name")"
	publish_state "$tmp" "$(sum_record "$name")"
}

# record_sum NAME SUM: before install-certs renames SUM's bytes onto NAME, the record lists SUM and the
# sum it held (a crash before or after the rename leaves a file the record still calls ours); the
# previous record is remembered for txn_rollback and narrow_sums drops it once every file is in place.
record_sum() {
	local name=$1 sum=$2 rec prev=""
	rec=$(sum_record "$name")
	[ -f "$rec" ] && { prev=$(head -n 1 -- "$rec") || die "cannot read $rec"; }
	TXN_SUMS+=("$name")
	TXN_SUM_PREV+=("$prev")
	[ "$prev" = "$sum" ] && [ "$(wc -l <"$rec")" = 1 ] && return 0
	write_sums "$name" "$sum" "$prev"
}
narrow_sums() { # NAME=SUM...: each record lists only the sum now installed
	local pair
	for pair in "$@"; do
		[ "$(cat -- "$(sum_record "${pair%%=*}")")" = "${pair#*=}" ] || write_sums "${pair%%=*}" "${pair#*=}"
	done
}

# set_aside_if_changed NAME: CERT_DIR/NAME is not what install-certs wrote (the user edited or replaced it
# since): copy it to STATE/replaced/<dir>/NAME.<UTC time> (0600; "MODE UID GID" in .meta, as the kept
# originals) before remove-certs restores the original or deletes it, and say where. Without a checksum
# record (state of an earlier version) nothing is set aside, as before.
set_aside_if_changed() {
	local name=$1 target=$CERT_DIR/$1 rec dir base dest meta i
	rec=$(sum_record "$name")
	[ -f "$rec" ] || return 0
	if [ -L "$target" ]; then
		: # a symbolic link is never what install-certs wrote
	elif [ -f "$target" ]; then
		grep -qxF -- "$(sha "$target")" "$rec" && return 0
	else
		return 0 # absent (or not a file: handled by the caller, as before)
	fi
	dir=$STATE_DIR/replaced/$(path_key "$CERT_DIR")
	install -d -m 0700 "$STATE_DIR/replaced" "$dir" || die "cannot create $dir (nothing removed)"
	base=$dir/$name.$(date -u +%Y%m%dT%H%M%SZ)
	dest=$base
	for ((i = 1; i < 100; i++)); do
		[ -e "$dest" ] || [ -L "$dest" ] || break
		dest=$base.$i
	done
	meta=$(stat -c '%a %u %g' -- "$target") || die "cannot stat $target"
	if [ -L "$target" ]; then
		cp -P -- "$target" "$dest.tmp" || die "cannot keep $target in $dir (nothing removed)"
	else
		(umask 077 && cat -- "$target" >"$dest.tmp") || die "cannot keep a copy of $target in $dir (nothing removed)"
	fi
	publish_state "$dest.tmp" "$dest"
	(umask 077 && printf '%s\n' "$meta" >"$dest.meta.tmp") || die "cannot write $dest.meta"
	publish_state "$dest.meta.tmp" "$dest.meta"
	warn "$target changed since install-certs wrote it: kept your file as $dest (mode uid gid: $meta, in $dest.meta) before putting back what was there before the program"
}

# restore_original NAME: put the kept copy back over CERT_DIR/NAME (temp file + rename), mode and owner.
restore_original() {
	local name=$1 target=$CERT_DIR/$1 mode uid gid tmp
	read -r mode uid gid <"$KEPT/$name.meta" || die "cannot read $KEPT/$name.meta"
	tmp=$(umask 077 && mktemp "$CERT_DIR/.$name.aggregation.XXXXXX") || die "cannot create a temp file in $CERT_DIR"
	CLEANUP+=("$tmp")
	cat -- "$KEPT/$name" >"$tmp" || die "cannot write $tmp"
	chown "$uid:$gid" "$tmp" || die "cannot give $tmp the original owner $uid:$gid"
	chmod "$mode" "$tmp" || die "cannot give $tmp the original mode $mode"
	fsync_paths "$tmp"
	mv -f -- "$tmp" "$target" || die "cannot rename $tmp to $target"
	say "$target restored (the original: mode $mode, owner $uid:$gid)"
}

# ------------------------------------------------------------------------------------------- certificates
# install-certs is one transaction: each file it replaces is hard-linked into TXN_UNDO first, and any
# failure after the first write (an EXIT without txn_commit) puts those back, drops the records this
# run took and removes the cert dir if this run created it. A failed create leaves no Pulumi resource,
# so no remove-certs would ever run to do it.
TXN_OPEN=0
TXN_UNDO=""
TXN_DONE=()
TXN_RECORDS=()
TXN_SUMS=() # the checksum records this run wrote, with (TXN_SUM_PREV) what each held before ('' none)
TXN_SUM_PREV=()
TXN_DIR_CREATED=0
txn_commit() { TXN_OPEN=0; }
txn_rollback() {
	local i name n=0
	TXN_OPEN=0
	for ((i = ${#TXN_DONE[@]} - 1; i >= 0; i--)); do
		name=${TXN_DONE[i]}
		if [ -e "$TXN_UNDO/$name" ]; then
			# the rename never happened: the same inode (or, a copy, the same bytes, mode and owner)
			[ "$TXN_UNDO/$name" -ef "$CERT_DIR/$name" ] && continue
			same_file "$TXN_UNDO/$name" "$CERT_DIR/$name" &&
				[ "$(stat -c '%a %u %g' -- "$TXN_UNDO/$name")" = "$(stat -c '%a %u %g' -- "$CERT_DIR/$name")" ] && continue
			mv -f -- "$TXN_UNDO/$name" "$CERT_DIR/$name" 2>/dev/null || warn "could not put back $CERT_DIR/$name"
		else
			[ -e "$CERT_DIR/$name" ] || continue
			rm -f -- "$CERT_DIR/$name" 2>/dev/null || warn "could not remove $CERT_DIR/$name"
		fi
		n=$((n + 1))
	done
	for name in "${TXN_RECORDS[@]+"${TXN_RECORDS[@]}"}"; do rm -f -- "$name" 2>/dev/null || true; done
	for ((i = ${#TXN_SUMS[@]} - 1; i >= 0; i--)); do
		if [ -z "${TXN_SUM_PREV[i]}" ]; then
			rm -f -- "$(sum_record "${TXN_SUMS[i]}")" 2>/dev/null || true
		else
			(write_sums "${TXN_SUMS[i]}" "${TXN_SUM_PREV[i]}") 2>/dev/null || warn "could not put back $(sum_record "${TXN_SUMS[i]}")"
		fi
	done
	rmdir -- "$KEPT" 2>/dev/null || true # (only when this run left nothing in it)
	[ "$n" -gt 0 ] && warn "install-certs failed: put back the $n file(s) it had replaced in $CERT_DIR"
	if [ "$TXN_DIR_CREATED" = 1 ]; then
		cleanup
		CLEANUP=()
		rmdir -- "$CERT_DIR" 2>/dev/null && warn "install-certs failed: removed $CERT_DIR (it created it)"
	fi
	return 0
}

cert_files() { printf '%s\n' "${PEM_FILES[@]}"; } # in the order of the PEM blocks: CA, cert, key

# split_pem DIR: split the PEM blocks on stdin into DIR/1, DIR/2, ... (DIR empty: only check them), at
# most --ca-certs + 2 of them;
# prints the block kinds (C = certificate, K = private key) or "!reason". Key material only ever flows
# stdin -> awk -> a file in a 0700 directory; it is never printed.
split_pem() {
	# shellcheck disable=SC2016
	awk -v d="$1" -v max="$((CA_CERTS + 2))" '
		{ sub(/\r$/, "") }
		state == 0 {
			if ($0 ~ /^[ \t]*$/) next
			if ($0 ~ /^-----BEGIN [A-Z0-9 ]+-----$/) {
				label = substr($0, 12, length($0) - 16)
				if (label == "CERTIFICATE") k = "C"
				else if (label == "PRIVATE KEY" || label == "RSA PRIVATE KEY" || label == "EC PRIVATE KEY") k = "K"
				else { bad = "a PEM block of an unexpected type (" label ")"; exit }
				nb++; kinds = kinds k; state = 1; lines = 0
				if (nb > max) { bad = "more than " max " PEM blocks"; exit }
				out = (d == "") ? "/dev/null" : d "/" nb
				print > out
				next
			}
			bad = "text outside the PEM blocks"; exit
		}
		state == 1 {
			if ($0 == "-----END " label "-----") {
				if (lines == 0) { bad = "an empty PEM block"; exit }
				print > out; close(out); state = 0; next
			}
			if ($0 !~ /^[A-Za-z0-9+\/=]+$/ && $0 !~ /^[A-Za-z-]+: / && $0 !~ /^$/) { bad = "a malformed PEM block"; exit }
			lines++; print > out
		}
		END {
			if (bad == "" && state == 1) bad = "an unterminated PEM block"
			if (bad != "") { print "!" bad; exit }
			print kinds
		}'
}

# check_targets: only regular files (or nothing) are replaced; anything else is refused up front.
check_targets() {
	local name target
	while IFS= read -r name; do
		target=$CERT_DIR/$name
		if [ -L "$target" ]; then
			die "$target is a symbolic link: replace it by the file it points to, or set apiserver.certDir to another directory (nothing written)"
		elif [ -e "$target" ] && [ ! -f "$target" ]; then
			die "$target exists and is not a regular file (nothing written)"
		fi
	done < <(cert_files)
}

# remove_stale_temps [MINUTES]: the temp dirs (split PEMs, key included) and temp files that a run killed
# outright (SIGKILL, power loss) left in the cert dir; only those older than MINUTES when given (a live
# run takes seconds).
remove_stale_temps() {
	[ -d "$CERT_DIR" ] || return 0
	local age=() f
	[ -n "${1:-}" ] && age=(-mmin "+$1")
	while IFS= read -r -d '' f; do
		rm -rf -- "$f" && warn "removed $f, left behind by an install-certs/remove-certs that was killed"
	done < <(find "$CERT_DIR" -mindepth 1 -maxdepth 1 \( -name '.aggregation.*' -o -name '.*.aggregation.*' \) \
		"${age[@]+"${age[@]}"}" -print0 2>/dev/null)
}

# ------------------------------------------------------------------------------------- trusted paths
# The cert dir holds a trust anchor (aggregator-ca.pem: whoever can replace it can impersonate any user
# through the aggregation layer) and the config file decides the apiserver's flags: both must be owned by
# root (or by the user running this script) and writable by nobody else. Checked before anything is written.
# Only the actions that write what kube-apiserver trusts check it: install-certs the cert dir, apply the
# config file. revert only warns: it gives the user their own file back, and an admin's chmod after `up`
# must not make destroy impossible.
untrusted_reason() { # PATH -> prints why PATH is not trusted; fails when it is (or is missing: ours to create)
	local path=$1 owner mode
	[ -e "$path" ] || return 1
	if ! read -r owner mode < <(stat -L -c '%u %a' -- "$path"); then
		printf 'stat cannot read its owner and mode\n' # (in a command substitution: no die)
	elif [ "$owner" != 0 ] && [ "$owner" != "$(id -u)" ]; then
		printf 'it is owned by uid %s, not root; whoever owns it can change what kube-apiserver trusts (chown root %s)\n' "$owner" "$path"
	elif [ $((8#$mode & 8#022)) != 0 ]; then
		printf 'mode %s lets its group or others write it, so they could change what kube-apiserver trusts (chmod go-w %s)\n' "$mode" "$path"
	else
		return 1
	fi
}
check_trusted() { # WHAT PATH
	local why
	why=$(untrusted_reason "$2") || return 0
	die "refusing $1 $2: $why, nothing written"
}
warn_untrusted() { # WHAT PATH
	local why
	why=$(untrusted_reason "$2") || return 0
	warn "$1 $2 is not safe: $why; reverting it anyway (this gives back the file as it was before apply)"
}

# key_owner_ids: KEY_UID/KEY_GID of --key-owner USER:GROUP (apiserver.keyOwner), each a name resolved
# with getent or a numeric id; empty --key-owner: the user running the script (root: root:root).
KEY_OWNER_RE='^([a-z_][a-z0-9_-]{0,31}|[0-9]{1,10}):([a-z_][a-z0-9_-]{0,31}|[0-9]{1,10})$'
KEY_UID=""
KEY_GID=""
key_owner_ids() {
	if [ -z "$KEY_OWNER" ]; then
		KEY_UID=$(id -u)
		KEY_GID=$(id -g)
		[ "$KEY_UID" = 0 ] && KEY_GID=0
		return 0
	fi
	[[ $KEY_OWNER =~ $KEY_OWNER_RE ]] ||
		die "--key-owner $(shown_value "$KEY_OWNER") (apiserver.keyOwner) must be USER:GROUP, each a name ([a-z_][a-z0-9_-]*, at most 32) or a numeric id; nothing written"
	KEY_UID=$(resolve_id passwd "${KEY_OWNER%%:*}" user)
	KEY_GID=$(resolve_id group "${KEY_OWNER#*:}" group)
}
resolve_id() { # DATABASE NAME-OR-ID NOUN -> the numeric id
	local db=$1 name=$2 noun=$3 entry
	case $name in
	*[!0-9]*) ;;
	*)
		[ "$((10#$name))" -le 4294967294 ] || die "apiserver.keyOwner: $noun id $name is out of range; nothing written"
		printf '%s
' "$((10#$name))"
		return 0
		;;
	esac
	command -v getent >/dev/null 2>&1 || die "apiserver.keyOwner: getent is missing on this master, so the $noun '$name' cannot be looked up; give a numeric id instead; nothing written"
	entry=$(getent "$db" "$name") ||
		die "apiserver.keyOwner: there is no $noun '$name' on this master (getent $db $name found nothing): create it, or set apiserver.keyOwner to the user and group kube-apiserver runs as; nothing written"
	printf '%s\n' "$(printf '%s' "$entry" | cut -d: -f3)"
}

same_mode_owner() { # FILE MODE UID GID
	[ "$(stat -c '%a %u %g' -- "$1" 2>/dev/null)" = "$(printf '%o %s %s' "$2" "$3" "$4")" ]
}

# der_sums FILE: the sha256 of each CERTIFICATE block's DER (its base64 body decoded), one a line; nothing
# for a missing file. The CA rotation's prune (components/ca_retirement.py) removes exactly the CAs a master
# stopped trusting, by these sums, from the cluster's extension-apiserver-authentication ConfigMap.
der_sums() {
	local body
	[ -f "$1" ] || return 0
	while IFS= read -r body; do
		printf '%s' "$body" | base64 -d 2>/dev/null | sha256sum | cut -d' ' -f1
	done < <(awk '
		{ sub(/\r$/, "") }
		/^-----BEGIN [A-Z0-9 ]+-----$/ { label = substr($0, 12, length($0) - 16); body = ""; cert = (label == "CERTIFICATE"); next }
		/^-----END / { if (cert) print body; cert = 0; next }
		cert { body = body $0 }' "$1")
}

install_certs() {
	need_abs --cert-dir "$CERT_DIR"
	need_pem_files
	local pem tmp kinds want i name mode target t2 uid gid fuid fgid sum first=0 sums=() trusted was
	uid=$(id -u)
	gid=$(id -g)
	[ "$uid" = 0 ] && gid=0
	# stdin is read once, into memory (a shell variable is neither argv nor environment), and checked
	# before anything is created or written.
	pem=$(timeout 60 cat) || die "could not read the certificates from stdin"
	kinds=$(printf '%s\n' "$pem" | split_pem "") || die "could not parse the certificates on stdin"
	want=$(printf 'C%.0s' $(seq "$CA_CERTS"))CK # --ca-certs CA certificates, the proxy cert, its key
	case $kinds in
	'!'*) die "refusing to install certificates: stdin has ${kinds#!}; expected $CA_CERTS aggregator CA certificate(s) (--ca-certs), the proxy-client certificate and its private key (nothing written)" ;;
	"$want") ;;
	*) die "refusing to install certificates: stdin must hold exactly $((CA_CERTS + 1)) CERTIFICATE blocks ($CA_CERTS of the CA, --ca-certs, then the proxy-client's) then 1 PRIVATE KEY block, got '${kinds:-nothing}' (nothing written)" ;;
	esac
	check_trusted "the cert dir" "$CERT_DIR"
	key_owner_ids
	ensure_state_dir
	take_host_lock "$CERTS_LOCK_WAIT"
	check_targets
	remove_stale_temps 10
	# Records are taken only where this cert dir has never been installed to (no owner file): a cert
	# dir installed by a version that kept nothing holds our own files, which are not originals.
	[ -f "$(owner_file certs "$CERT_DIR")" ] || first=1
	KEPT=$(kept_dir)
	if [ ! -d "$KEPT" ]; then install -d -m 0700 "$KEPT" || die "cannot create $KEPT"; fi
	trap 'exit 143' TERM INT
	TXN_OPEN=1
	if [ ! -d "$CERT_DIR" ]; then
		if [ ! -f "$KEPT/cert-dir.created" ]; then
			(umask 077 && : >"$KEPT/.cert-dir.created.tmp") || die "cannot write in $KEPT"
			publish_state "$KEPT/.cert-dir.created.tmp" "$KEPT/cert-dir.created"
			TXN_RECORDS+=("$KEPT/cert-dir.created")
		fi
		install -d -m 0755 "$CERT_DIR" || die "cannot create $CERT_DIR"
		TXN_DIR_CREATED=1
		say "created $CERT_DIR (0755)"
	fi
	# A private temp dir in the cert dir: same filesystem (rename is atomic), mode 0700, removed on exit.
	tmp=$(umask 077 && mktemp -d "$CERT_DIR/.aggregation.XXXXXX") || die "cannot create a temp dir in $CERT_DIR"
	CLEANUP+=("$tmp")
	TXN_UNDO=$tmp/undo
	mkdir -m 0700 "$TXN_UNDO" || die "cannot create $TXN_UNDO"
	kinds=$(umask 077 && printf '%s\n' "$pem" | split_pem "$tmp") || die "could not split the certificates"
	[ "$kinds" = "$want" ] || die "the certificates on stdin changed while reading them"
	pem=""
	# the files in the order of --pem-files: f1 the CA bundle (blocks 1..N, in stdin's order), f2 the
	# proxy-client certificate, f3 its key
	(umask 077 && for i in $(seq "$CA_CERTS"); do cat -- "$tmp/$i"; done >"$tmp/f1") || die "cannot write $tmp/f1"
	mv -- "$tmp/$((CA_CERTS + 1))" "$tmp/f2" || die "cannot rename in $tmp"
	mv -- "$tmp/$((CA_CERTS + 2))" "$tmp/f3" || die "cannot rename in $tmp"
	# the CAs this master trusted before (a regular file: check_targets refused anything else), and after
	was=$(der_sums "$CERT_DIR/${PEM_FILES[0]}") || die "cannot read $CERT_DIR/${PEM_FILES[0]}"
	trusted=$(der_sums "$tmp/f1") || die "cannot read $tmp/f1"
	i=0
	while IFS= read -r name; do
		i=$((i + 1))
		# the certificates: 0644 root; the key: 0600, owned by apiserver.keyOwner when given
		mode=0644 fuid=$uid fgid=$gid
		[ "$name" = "${PEM_FILES[2]}" ] && mode=0600 fuid=$KEY_UID fgid=$KEY_GID
		target="$CERT_DIR/$name"
		[ "$first" = 1 ] && ! has_record "$name" && keep_original "$name"
		sum=$(sha "$tmp/f$i") || die "cannot checksum $tmp/f$i"
		record_sum "$name" "$sum"
		sums+=("$name=$sum")
		if same_file "$tmp/f$i" "$target" && same_mode_owner "$target" "$mode" "$fuid" "$fgid"; then
			say "$target unchanged"
			continue
		fi
		t2="$tmp/$name.new"
		install -m "$mode" -o "$fuid" -g "$fgid" "$tmp/f$i" "$t2" || die "cannot write $t2"
		fsync_paths "$t2"
		# what this run replaces, for txn_rollback: the old inode itself (a copy where links fail)
		if [ -f "$target" ]; then
			ln -- "$target" "$TXN_UNDO/$name" 2>/dev/null || cp -p -- "$target" "$TXN_UNDO/$name" ||
				die "cannot keep $target for a rollback"
		fi
		TXN_DONE+=("$name")
		mv -f -- "$t2" "$target" || die "cannot rename into $target"
		say "$target written ($mode $fuid:$fgid)"
	done < <(cert_files)
	fsync_paths "$CERT_DIR"
	narrow_sums "${sums[@]}"
	claim certs "$CERT_DIR"
	txn_commit
	while IFS= read -r sum; do
		if [ -n "$sum" ] && ! grep -qxF -- "$sum" <<<"$trusted"; then
			say "$CERT_DIR/${PEM_FILES[0]} no longer trusts the CA sha256:$sum"
		fi
	done <<<"$was"
	return 0
}

remove_certs() {
	need_abs --cert-dir "$CERT_DIR"
	need_pem_files
	local name owner
	if [ -d "$STATE_DIR" ]; then take_host_lock "$CERTS_LOCK_WAIT"; fi
	if owner=$(owner_other_than_me certs "$CERT_DIR"); then
		say "kept the certificates in $CERT_DIR: master resource '$owner' manages them now (a renamed master?)"
		return 0
	fi
	KEPT=$(kept_dir)
	if [ ! -d "$KEPT" ] && [ ! -f "$(owner_file certs "$CERT_DIR")" ]; then
		# Nothing of ours here (a retried delete after a complete one): the files are the user's.
		say "nothing to remove: no record of an install-certs in $STATE_DIR for $CERT_DIR"
		return 0
	fi
	if [ ! -d "$CERT_DIR" ] && [ -d "$KEPT" ] && ls "$KEPT"/*.meta >/dev/null 2>&1; then
		install -d -m 0755 "$CERT_DIR" || die "cannot create $CERT_DIR"
		warn "$CERT_DIR was gone; created it again to put the original files back"
	fi
	while IFS= read -r name; do
		set_aside_if_changed "$name"
		if [ -f "$KEPT/$name.meta" ]; then
			restore_original "$name"
		elif [ -e "$CERT_DIR/$name" ] || [ -L "$CERT_DIR/$name" ]; then
			rm -f -- "$CERT_DIR/$name" || die "cannot remove $CERT_DIR/$name"
			say "$CERT_DIR/$name removed"
		else
			say "$CERT_DIR/$name already absent"
		fi
	done < <(cert_files)
	remove_stale_temps
	[ -d "$CERT_DIR" ] && fsync_paths "$CERT_DIR"
	if [ -f "$KEPT/cert-dir.created" ] && [ -d "$CERT_DIR" ]; then
		if rmdir -- "$CERT_DIR" 2>/dev/null; then
			say "$CERT_DIR removed (install-certs created it)"
		else
			say "kept $CERT_DIR: install-certs created it, but it holds other files now"
		fi
	fi
	# The owner file goes before the records: a delete retried after a crash in between still finds
	# the records and restores again (the same bytes), instead of taking the originals for ours.
	release certs "$CERT_DIR"
	rm -rf -- "$KEPT" || die "cannot remove $KEPT"
}

# --------------------------------------------------------------------------------------- config editing
# The editor is its own file, apiserver-flags-editor.awk (--editor: the program installs it next to this
# script, content-addressed): awk reads the config file, edits the flag list of the layout in memory and
# prints the new file; bash keeps the transaction around it (lock, backup, atomic write, restart,
# readiness, rollback).
# edit_config MODE INPUT OUTPUT NEWRECORD REPORT: run the editor (NEWRECORD: apply's record of the result;
# REPORT: the changes, one a line). Called in `if`/`||` contexts, where set -e does not apply: awk's own
# exit status reports a failed write (a truncated result never becomes the config file). The flags go in
# one `-v` word, space-separated: awk expands backslash escapes in -v values, so this is exact only
# because VALUE_RE admits neither '\\' nor a space (widen the grammar and this must change too).
edit_config() {
	local mode=$1 in=$2 out=$3 newrec=$4 report=$5 record="" no_final_newline=0
	[ -f "$RECORD" ] && record=$RECORD
	# awk cannot tell whether the last line ends with a newline: a missing one stays missing
	if [ -s "$in" ] && [ "$(tail -c 1 "$in" | od -An -c | tr -d ' ')" != '\n' ]; then no_final_newline=1; fi
	awk -v mode="$mode" -v layout="$LAYOUT" -v flags="${FLAGS[*]+${FLAGS[*]}}" -v record_file="$record" \
		-v new_record_file="$newrec" -v report_file="$report" -v cert_dir="${CERT_DIR%/}" \
		-v volume_name="$VOLUME_NAME" -v container="$CONTAINER" -v no_final_newline="$no_final_newline" \
		-f "$FLAGS_EDITOR" "$in" >"$out"
}

edit_failed() { # the editor's own message, or why there is none (it is written into the work dir)
	local why
	why=$(cat "$WORK/edit.err" 2>/dev/null) || true
	[ -n "$why" ] || why="the editor could not write its result into $WORK (disk full?); nothing changed"
	die "cannot edit $CONFIG_PATH as layout $LAYOUT: $why"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

same_file() { # A B: both regular files with the same bytes (cmp is diffutils: fall back to sha256sum)
	[ -f "$1" ] && [ -f "$2" ] || return 1
	if command -v cmp >/dev/null 2>&1; then cmp -s -- "$1" "$2"; else [ "$(sha "$1")" = "$(sha "$2")" ]; fi
}

# write_atomic SRC DEST: copy SRC over DEST with DEST's mode and owner, via a hidden temp file in DEST's
# directory and rename (the kubelet ignores hidden files in its manifest directory).
write_atomic() {
	try_write_atomic "$@" || die "cannot write $2 (nothing changed in it: the file is replaced by rename only)"
}
try_write_atomic() {
	local src=$1 dest=$2 dir base tmp
	dir=$(dirname -- "$dest")
	base=$(basename -- "$dest")
	tmp=$(mktemp "$dir/.$base.aggregation.XXXXXX") || return 1
	CLEANUP+=("$tmp")
	cat -- "$src" >"$tmp" || return 1
	if [ -e "$dest" ]; then
		chmod --reference="$dest" "$tmp" 2>/dev/null || true
		chown --reference="$dest" "$tmp" 2>/dev/null || true
	else
		chmod 0644 "$tmp" || return 1
	fi
	# the bytes on disk before the name points at them: a crash leaves the old or the new file, whole
	fsync_paths "$tmp" || return 1
	mv -f -- "$tmp" "$dest" || return 1
	fsync_paths "$dir" || true
}

write_state() { try_write_state "$1" "$2" || die "cannot write $2"; } # SRC DEST (state files: mode 0600)
try_write_state() {
	local tmp
	tmp=$(mktemp "$STATE_DIR/.state.XXXXXX") || return 1
	CLEANUP+=("$tmp")
	cat -- "$1" >"$tmp" && chmod 0600 "$tmp" && fsync_paths "$tmp" && mv -f -- "$tmp" "$2"
}

# keep_state SRC DEST: write_state where a failure is only a warning (the rollback goes on regardless)
keep_state() {
	try_write_state "$1" "$2" 2>/dev/null || warn "could not write $2 (disk full?); revert falls back to the record"
}

# ------------------------------------------------------------------------------------ restart + readiness
# Ready means: evidence that kube-apiserver really restarted (a new listening socket on the readyz port,
# or readyz not answering 200 at some point after the change), then --ready-steady-seconds of nothing
# but 200s. One 200 is not enough: an apiserver that answers 200 once and then 500 (a flapping start),
# or the old process (a static pod the kubelet has not replaced yet) would pass.

# readyz_code MAX: prints the HTTP status of READYZ_URL (000 when it does not answer). Proxy variables
# of the master's environment are ignored: the URL points at this master itself.
readyz_code() {
	local max=$1 code
	if command -v curl >/dev/null 2>&1; then
		code=$(curl --noproxy '*' -sk -o /dev/null -w '%{http_code}' --connect-timeout 2 --max-time "$max" "$READYZ_URL" 2>/dev/null) || true
	else
		if env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY -u all_proxy \
			wget -q --no-check-certificate -T "$max" -t 1 -O /dev/null "$READYZ_URL" 2>/dev/null; then code=200; else code=000; fi
	fi
	printf '%s\n' "${code:-000}"
}

readyz_port() { # the TCP port of READYZ_URL (the scheme's default when it names none)
	local rest=${READYZ_URL#*://}
	rest=${rest%%/*}
	case $rest in
	*:*) printf '%s\n' "${rest##*:}" ;;
	*) case $READYZ_URL in https:*) echo 443 ;; *) echo 80 ;; esac ;;
	esac
}

# listener_id: the inodes of the sockets listening on the readyz port in this network namespace (a new
# kube-apiserver process opens a new one), sorted, comma-separated; empty when none.
listener_id() {
	local port
	port=$(readyz_port)
	case $port in '' | *[!0-9]*) return 0 ;; esac
	awk -v port="$(printf '%04X' "$((10#$port))")" '
		FNR > 1 && $4 == "0A" { split($2, a, ":"); if (a[2] == port) print $10 }' \
		/proc/net/tcp /proc/net/tcp6 2>/dev/null | sort | paste -sd, - || true
}

# note_listener: remember the listener before a change (static-pod: before the manifest is written, as
# the kubelet may replace the pod at once)
LISTENER_BEFORE=""
note_listener() { LISTENER_BEFORE=$(listener_id); }

poll_sleep() { # elapsed ms since the restart -> sleep a little: fine-grained at first, then back off
	if [ "$1" -lt 5000 ]; then sleep 0.05; elif [ "$1" -lt 30000 ]; then sleep 0.5; else sleep 1; fi
}

# wait_ready START_MS DEADLINE_MS NEED_EVIDENCE: 0 when, after the restart evidence (not needed when
# NEED_EVIDENCE is 0), READYZ_URL answered only 200 for READY_STEADY seconds, before the deadline.
# Sets LAST_CODE, RESTART_SEEN (0/1) and FLAPS (how often a run of 200s was broken).
wait_ready() {
	local start=$1 deadline=$2 since=0 now left code cur
	RESTART_SEEN=$((1 - $3))
	FLAPS=0
	while :; do
		now=$(now_ms)
		left=$(((deadline - now) / 1000 + 1))
		[ "$left" -gt 5 ] && left=5
		[ "$left" -lt 1 ] && left=1
		code=$(readyz_code "$left")
		LAST_CODE=$code
		now=$(now_ms)
		if [ "$code" != 200 ]; then
			[ "$RESTART_SEEN" = 1 ] || say "restart seen after $(elapsed "$start"): readyz answered $code"
			RESTART_SEEN=1
			[ "$since" = 0 ] || FLAPS=$((FLAPS + 1))
			since=0
		else
			if [ "$RESTART_SEEN" = 0 ]; then
				cur=$(listener_id)
				if [ -n "$cur" ] && [ "$cur" != "$LISTENER_BEFORE" ]; then
					say "restart seen after $(elapsed "$start"): a new process listens on port $(readyz_port)"
					RESTART_SEEN=1
				fi
			fi
			if [ "$RESTART_SEEN" = 1 ]; then
				[ "$since" != 0 ] || since=$now
				[ $((now - since)) -ge $((READY_STEADY * 1000)) ] && return 0
			fi
		fi
		[ "$now" -ge "$deadline" ] && return 1
		if [ "$since" != 0 ]; then sleep 0.25; else poll_sleep $((now - start)); fi
	done
}

elapsed() { # START_MS -> "1.2s"
	local t=$(($(now_ms) - $1))
	printf '%s.%ss\n' $((t / 1000)) $((t % 1000 / 100))
}

# restart_and_wait [NEED_EVIDENCE=1] -> 0 when ready. LISTENER_BEFORE must be noted before the change.
restart_and_wait() {
	local need=${1:-1} start deadline rc=0
	RESTART_ERR=""
	start=$(now_ms)
	deadline=$((start + READY_TIMEOUT * 1000))
	if [ "$LAYOUT" = systemd-unit ] && command -v systemctl >/dev/null 2>&1; then
		if ! timeout 60 systemctl daemon-reload >"$WORK/reload.out" 2>&1 9>&-; then
			warn "systemctl daemon-reload failed: $(tail -n 3 "$WORK/reload.out" | tr '\n' ' ')"
		fi
	fi
	if [ -n "${RESTART_CMD//[[:space:]]/}" ]; then
		say "restarting: $RESTART_CMD"
		timeout -k 5 "$READY_TIMEOUT" bash -c "$RESTART_CMD" </dev/null >"$WORK/restart.out" 2>&1 9>&- || rc=$?
		# bounded (the flags step streams stdout line by line, and pulumi-command hangs on a line over 64 KiB)
		tail -n 20 "$WORK/restart.out" 2>/dev/null | cut -b 1-300 | sed 's/^/    /' || true
		if [ "$rc" != 0 ]; then
			RESTART_ERR="the restart command exited with $rc"
			warn "$RESTART_ERR"
		fi
	fi
	if wait_ready "$start" "$deadline" "$need"; then
		say "ready after $(elapsed "$start") ($READYZ_URL answered 200 for ${READY_STEADY}s in a row)"
		return 0
	fi
	return 1
}

# not_ready_hint: why the wait failed, from what wait_ready saw (LAST_CODE, RESTART_SEEN, FLAPS)
not_ready_hint() {
	if [ "${RESTART_SEEN:-1}" = 0 ]; then
		printf '; no sign that kube-apiserver restarted (readyz kept answering 200 from the same listening socket): '
		if [ "$LAYOUT" = static-pod ]; then printf 'is the kubelet running and watching %s?' "$(dirname -- "$CONFIG_PATH")"; else printf 'check apiserver.restartCommand'; fi
		return 0
	fi
	[ "${FLAPS:-0}" = 0 ] || printf '; readyz answered 200 but not for %ss in a row (it went back to non-200 %s times): a flapping start' "$READY_STEADY" "$FLAPS"
	case ${LAST_CODE:-} in
	401 | 403) printf '; readyz refuses anonymous requests (--anonymous-auth=false or RBAC without system:public-info-viewer?): point readyzUrl at an endpoint that answers 200 without credentials' ;;
	000) printf '; nothing answered at that address' ;;
	esac
	return 0
}

last_logs() {
	local out=$WORK/logs id
	: >"$out"
	if [ -n "$LOG_CMD" ]; then
		timeout -k 2 15 bash -c "$LOG_CMD" >"$out" 2>&1 </dev/null 9>&- || true
	elif [ "$LAYOUT" = static-pod ] && command -v crictl >/dev/null 2>&1; then
		id=$(timeout 15 crictl ps -a --name kube-apiserver -q 2>/dev/null 9>&- | head -n 1) || true
		[ -n "$id" ] && { timeout 15 crictl logs --tail 20 "$id" >"$out" 2>&1 9>&- || true; }
	elif command -v journalctl >/dev/null 2>&1; then
		timeout -k 2 15 journalctl -u kube-apiserver -n 20 --no-pager >"$out" 2>&1 </dev/null 9>&- || true
	fi
	if [ -s "$out" ]; then tail -n 20 "$out" | sed 's/^/    /'; else echo "    (no apiserver log found: pass --log-command to name one)"; fi
}

# ----------------------------------------------------------------------------------------- apply / revert
# ------------------------------------------------------------------------------------------------ lock
# One lock per state dir (= per host): install-certs, remove-certs, apply, revert and check never
# interleave, whichever stack or operator runs them, and one lock cannot deadlock. The lock file is
# deleted only by its holder when nothing else of ours is left in the state dir; so every run re-checks,
# once it holds the lock, that its file is still the one at that path (a waiter that was queued on a
# deleted file would otherwise run alongside a run that created the file anew). Children that may
# outlive the run (the restart command can leave a daemon behind) get fd 9 closed (9>&-).
HOLD_LOCK=0
CERTS_LOCK_WAIT=900 # install-certs/remove-certs wait this long for an apply/revert (its restarts) to end
take_host_lock() { # WAIT_SECONDS
	if ! command -v flock >/dev/null 2>&1; then
		warn "flock not found: not guarding $STATE_DIR against a concurrent run"
		return 0
	fi
	LOCK=$STATE_DIR/host.lock
	local wait=$1 deadline tries left
	deadline=$(($(now_ms) + wait * 1000))
	for ((tries = 0; tries < 100; tries++)); do
		exec 9>>"$LOCK" || die "cannot open the lock file $LOCK"
		left=$(((deadline - $(now_ms)) / 1000))
		[ "$left" -ge 0 ] || left=0
		flock -w "$left" 9 ||
			die "another install-certs/remove-certs/apply/revert on this master has held $LOCK for ${wait}s; is a rollout (or a restart command) still running?"
		if [ "$(stat -L -c '%d:%i' /dev/fd/9 2>/dev/null)" = "$(stat -c '%d:%i' -- "$LOCK" 2>/dev/null)" ]; then
			HOLD_LOCK=1
			return 0
		fi
		exec 9>&- # the holder before us deleted the file: queue on the one at the path now
	done
	die "could not take $LOCK (it was replaced 100 times)"
}

# drop_idle_lock: the holder deletes the lock file when the state dir holds nothing else of ours (the
# installed scripts aside: the certs step's delete removes those after remove-certs; replaced/ holds the
# user's files, not ours), so that a master given back by destroy keeps no file of this program.
drop_idle_lock() {
	[ "$HOLD_LOCK" = 1 ] && [ -d "$STATE_DIR" ] || return 0
	local other
	other=$(find "$STATE_DIR" -mindepth 1 -maxdepth 1 ! -name host.lock ! -name scripts ! -name replaced ! -name '.work.*' -print -quit 2>/dev/null) || return 0
	[ -z "$other" ] && rm -f -- "$LOCK"
	return 0
}

forget_config() { # nothing of ours is left in the config file: drop its state and let go of it
	rm -f "$RECORD" "$APPLIED" "$BACKUP" "$PENDING" "$LEGACY_LOCK" "$(owner_file config "$CONFIG_LINK")"
}

setup_host_state() {
	validate_host_opts
	case $ACTION in
	apply) check_trusted "the config file" "$CONFIG_PATH" ;;
	revert) warn_untrusted "the config file" "$CONFIG_PATH" ;;
	esac
	ensure_state_dir
	local key
	key=$(path_key "$CONFIG_PATH")
	# A config path that is a symbolic link (a unit linked from elsewhere) keeps its link: the state is
	# keyed by the configured path, and the file edited (atomically, in its own directory) is the target.
	CONFIG_LINK=$CONFIG_PATH
	if [ -L "$CONFIG_PATH" ]; then
		CONFIG_PATH=$(readlink -f -- "$CONFIG_LINK") || die "cannot resolve the symbolic link $CONFIG_LINK"
		say "$CONFIG_LINK is a symbolic link: editing its target $CONFIG_PATH (the link stays)"
	fi
	BACKUP=$STATE_DIR/$key.orig
	RECORD=$STATE_DIR/$key.record
	APPLIED=$STATE_DIR/$key.applied
	PENDING=$STATE_DIR/$key.pending
	LEGACY_LOCK=$STATE_DIR/$key.lock # the per-file lock of earlier versions: removed with the record
	# an apply/revert waits for another one's restart, readiness wait and rollback, at most
	take_host_lock $((2 * READY_TIMEOUT + 120))
	WORK=$(umask 077 && mktemp -d "$STATE_DIR/.work.XXXXXX") || die "cannot create a work dir in $STATE_DIR"
	CLEANUP+=("$WORK")
}

# save_previous: the config file, record and checksum as they are before a change, for the rollback
save_previous() {
	cat -- "$CONFIG_PATH" >"$WORK/prev" || die "cannot save a copy of $CONFIG_PATH in $WORK (disk full?); nothing changed"
	if [ -f "$APPLIED" ]; then cat -- "$APPLIED" >"$WORK/prev-applied" || die "cannot write in $WORK (disk full?); nothing changed"; fi
	if [ -f "$RECORD" ]; then cat -- "$RECORD" >"$WORK/prev-record" || die "cannot write in $WORK (disk full?); nothing changed"; fi
	return 0
}

changes_summary() { grep -v '^= ' "$1" | sed 's/^/  /' || true; }

# rollback: the new file did not come up; put the previous one back and make sure that one runs again.
rollback() { # PREV PREV_RECORD(or empty) BACKUP_CREATED
	local prev=$1 prev_rec=$2 backup_created=$3 logs change again
	logs=$(last_logs)
	change=$(changes_summary "$WORK/report")
	note_listener
	write_atomic "$prev" "$CONFIG_PATH"
	if [ -n "$prev_rec" ]; then keep_state "$prev_rec" "$RECORD"; else rm -f "$RECORD"; fi
	# the owner as before this run (apply claims it before writing the file; ownership moves on success)
	case $PREV_OWNER in
	-) ;; # (a revert: it claims nothing)
	'') release config "$CONFIG_LINK" ;;
	"$MASTER") ;;
	*) printf '%s\n' "$PREV_OWNER" >"$(owner_file config "$CONFIG_LINK")" 2>/dev/null || warn "could not give $CONFIG_LINK back to '$PREV_OWNER'" ;;
	esac
	if [ -f "$WORK/prev-applied" ]; then keep_state "$WORK/prev-applied" "$APPLIED"; else rm -f "$APPLIED"; fi
	[ "$backup_created" = 1 ] && rm -f "$BACKUP"
	say "restored the previous $CONFIG_PATH; restarting kube-apiserver on it"
	if restart_and_wait; then
		again="the previous file is back and kube-apiserver is ready on it"
		rm -f "$PENDING"
		[ -n "$prev_rec" ] || rm -f "$LEGACY_LOCK"
	else
		again="the previous file is back but kube-apiserver is NOT ready on it either (readyz: $LAST_CODE)"
	fi
	die "kube-apiserver did not become ready ($READYZ_URL: ${LAST_CODE_NEW:-?}${HINT_NEW}${RESTART_ERR_NEW:+; $RESTART_ERR_NEW}) within ${READY_TIMEOUT}s after this change to $CONFIG_PATH:
$change
$again.
Last apiserver log lines (of the failed start):
$logs"
}

do_apply() {
	setup_host_state
	[ -f "$CONFIG_PATH" ] || die "$CONFIG_PATH does not exist (layout $LAYOUT): is this the kube-apiserver config file of this master?"
	local f val
	for f in "${FLAGS[@]}"; do
		case ${f%%=*} in
		*-file)
			val=${f#*=}
			case $val in /*) [ "$ACTION" = check ] || [ -f "$val" ] || die "${f%%=*}=$val: no such file (run install-certs first)" ;; esac
			;;
		esac
	done
	local new=$WORK/new newrec=$WORK/record report=$WORK/report
	edit_config apply "$CONFIG_PATH" "$new" "$newrec" "$report" 2>"$WORK/edit.err" ||
		edit_failed
	say "$CONFIG_PATH ($LAYOUT):"
	sed 's/^/  /' "$report" || true
	if [ "$ACTION" = check ]; then
		if same_file "$new" "$CONFIG_PATH"; then say "check: unchanged"; else
			say "check: would change $CONFIG_PATH:"
			diff -u "$CONFIG_PATH" "$new" | tail -n +3 || true
		fi
		return 0
	fi
	if [ "$LAYOUT" = static-pod ]; then
		warn "kubeadm upgrade rewrites $CONFIG_PATH and drops these flags: put them in ClusterConfiguration.apiServer.extraArgs (kubeadm-config) too"
	fi
	local need_restart=1
	if same_file "$new" "$CONFIG_PATH"; then
		if [ -f "$PENDING" ]; then
			say "unchanged, but a previous run stopped before kube-apiserver was ready on this file; restarting it"
			# the kubelet replaced the pod when the earlier run wrote the manifest: no restart to see now
			[ "$LAYOUT" != static-pod ] || need_restart=0
		else
			[ -s "$newrec" ] && ! same_file "$newrec" "$RECORD" && write_state "$newrec" "$RECORD"
			claim config "$CONFIG_LINK"
			say "unchanged: all ${#FLAGS[@]} flags already set in $CONFIG_PATH; no restart"
			return 0
		fi
	fi
	local backup_created=0 prev=$WORK/prev prev_rec=""
	save_previous
	[ -f "$RECORD" ] && prev_rec=$WORK/prev-record
	if [ ! -f "$BACKUP" ]; then
		write_state "$CONFIG_PATH" "$BACKUP"
		backup_created=1
		say "backed up the original $CONFIG_PATH to $BACKUP"
	elif [ -f "$APPLIED" ] && [ "$(sha "$CONFIG_PATH")" != "$(cat "$APPLIED")" ]; then
		# Someone changed the file since our last apply (kubeadm upgrade, an operator): the backup no
		# longer is "this file without our flags". Replace it by exactly that, computed from the record.
		if edit_config revert "$CONFIG_PATH" "$WORK/base" "$WORK/base-record" "$WORK/base-report" 2>/dev/null; then
			write_state "$WORK/base" "$BACKUP"
			say "$CONFIG_PATH changed since the last apply: refreshed the backup (the file without our flags)"
		else
			rm -f "$BACKUP"
			warn "$CONFIG_PATH changed since the last apply; dropped the stale backup (revert will undo the record)"
		fi
	fi
	# Every state file first, then the config file: a full disk or a crash before the config write leaves
	# the config untouched (and a record a revert can still apply); after it, nothing needs to be written
	# but the rollback's own config write.
	: >"$PENDING" || die "cannot write $PENDING (nothing changed in $CONFIG_PATH)"
	write_state "$newrec" "$RECORD"
	sha "$new" >"$WORK/sum" || die "cannot write $WORK/sum (nothing changed in $CONFIG_PATH)"
	write_state "$WORK/sum" "$APPLIED"
	PREV_OWNER=$(cat -- "$(owner_file config "$CONFIG_LINK")" 2>/dev/null) || PREV_OWNER=""
	claim config "$CONFIG_LINK"
	note_listener
	write_atomic "$new" "$CONFIG_PATH"
	say "wrote $CONFIG_PATH"
	if restart_and_wait "$need_restart"; then
		rm -f "$PENDING"
		say "done: aggregation flags active on $MASTER"
		return 0
	fi
	LAST_CODE_NEW=$LAST_CODE
	RESTART_ERR_NEW=$RESTART_ERR
	HINT_NEW=$(not_ready_hint)
	rollback "$prev" "$prev_rec" "$backup_created"
}

do_revert() {
	setup_host_state
	local owner
	if owner=$(owner_other_than_me config "$CONFIG_LINK"); then
		say "left $CONFIG_PATH as it is: master resource '$owner' manages it now (a renamed master?)"
		return 0
	fi
	if [ ! -f "$RECORD" ]; then
		# An apply that found every flag already set (a hand-made setup) records nothing but owns the
		# file: let go of it, or the scripts would be kept for an owner that no longer exists.
		rm -f "$LEGACY_LOCK" "$(owner_file config "$CONFIG_LINK")"
		say "nothing to revert: no record of an apply in $STATE_DIR for $CONFIG_PATH"
		return 0
	fi
	if [ ! -f "$CONFIG_PATH" ]; then
		warn "$CONFIG_PATH does not exist; nothing to revert"
		forget_config
		return 0
	fi
	local new=$WORK/new report=$WORK/report
	if [ -f "$BACKUP" ] && [ -f "$APPLIED" ] && [ "$(sha "$CONFIG_PATH")" = "$(cat "$APPLIED")" ]; then
		# Nobody touched the file since our apply: the backup is exactly the file without our changes.
		cat -- "$BACKUP" >"$new"
		edit_config revert "$CONFIG_PATH" "$WORK/computed" "$WORK/record" "$report" 2>/dev/null || : >"$report"
	else
		edit_config revert "$CONFIG_PATH" "$new" "$WORK/record" "$report" 2>"$WORK/edit.err" ||
			edit_failed
	fi
	say "$CONFIG_PATH ($LAYOUT): revert"
	sed 's/^/  /' "$report" || true
	if same_file "$new" "$CONFIG_PATH"; then
		forget_config
		say "unchanged: no flag of ours left in $CONFIG_PATH; no restart"
		return 0
	fi
	local prev=$WORK/prev prev_rec=$WORK/prev-record
	save_previous
	: >"$PENDING" || die "cannot write $PENDING (nothing changed in $CONFIG_PATH)"
	note_listener
	write_atomic "$new" "$CONFIG_PATH"
	say "wrote $CONFIG_PATH"
	if restart_and_wait; then
		forget_config
		say "done: aggregation flags removed on $MASTER"
		return 0
	fi
	LAST_CODE_NEW=$LAST_CODE
	RESTART_ERR_NEW=$RESTART_ERR
	HINT_NEW=$(not_ready_hint)
	rollback "$prev" "$prev_rec" 0
}

# ------------------------------------------------------------------------------------------------ verify
# verify (apiserver.manage: false): read the layout's config file with the editor's own region finder
# and check the flags against the requirements. It writes nothing: no state dir, no lock (the config
# file is only ever replaced by rename, so a read sees a whole old or a whole new file), no temp file.
PROBLEMS=0
declare -A FVAL=() FBARE=()
problem() {
	printf '%s: master %s: error: %s\n' "$PROG" "${MASTER:-?}" "$*" >&2 2>/dev/null || true
	PROBLEMS=$((PROBLEMS + 1))
}
why() { [ -z "$1" ] || printf ' (%s)' "$1"; } # WHY -> " (WHY)" or nothing

validate_verify_opts() {
	need_abs --config-path "$CONFIG_PATH"
	need_editor
	[ -n "$LAYOUT" ] || die "--layout is required"
	[ ${#REQ_KIND[@]} -gt 0 ] || die "verify needs at least one --require, --require-file-flag or --require-listed"
}

# read_flags: FVAL[--name]=value of the last occurrence (kube-apiserver: the last one wins); FBARE[--name]=1
# for a flag given without a value
read_flags() {
	local listing line name
	[ -f "$CONFIG_PATH" ] || die "$CONFIG_PATH does not exist (layout $LAYOUT): is this the kube-apiserver config file of this master?"
	listing=$(awk -v mode=list -v layout="$LAYOUT" -v container="$CONTAINER" -f "$FLAGS_EDITOR" "$CONFIG_PATH" 2>&1) ||
		die "cannot read $CONFIG_PATH as layout $LAYOUT: $listing"
	while IFS= read -r line; do
		name=${line%%$'\t'*}
		# only names kube-apiserver could have (the requirements are validated the same way)
		[[ $name =~ ^--[a-z0-9][a-z0-9-]*$ ]] || continue
		if [[ $line == *$'\t'* ]]; then
			FVAL[$name]=${line#*$'\t'}
			FBARE[$name]=0
		else
			FVAL[$name]=""
			FBARE[$name]=1
		fi
	done <<<"$listing"
}

is_bare() { [ "${FBARE[$1]:-0}" = 1 ]; } # NAME
shown() { if is_bare "$1"; then printf '%s' "$1"; else printf '%s=%s' "$1" "${FVAL[$1]}"; fi; } # NAME

check_equal() { # --NAME=VALUE WHY
	local name=${1%%=*} want=${1#*=}
	if [ -z "${FVAL[$name]+x}" ]; then
		problem "$name is not set$(why "$2")"
	elif is_bare "$name"; then
		[ "$want" = true ] || problem "$name is set without a value, expected $1$(why "$2")"
	elif [ "${FVAL[$name]}" != "$want" ]; then
		problem "$(shown "$name"), expected $1$(why "$2")"
	fi
}

check_file() { # --NAME WHY
	local name=$1 path
	if [ -z "${FVAL[$name]+x}" ]; then
		problem "$name is not set$(why "$2")"
		return
	fi
	path=${FVAL[$name]}
	if [ -z "$path" ]; then
		problem "$name is set without a file name$(why "$2")"
	elif [ -f "$path" ]; then
		:
	elif [ -e "$path" ]; then
		problem "$name=$path: not a regular file$(why "$2")"
	else
		problem "$name=$path: no such file$(why "$2")"
	fi
}

check_listed() { # --NAME=ITEM WHY: unset or empty means "any"; else a comma list that must hold ITEM
	local name=${1%%=*} item=${1#*=} entry
	[ -n "${FVAL[$name]:-}" ] || return 0
	local -a entries
	IFS=, read -r -a entries <<<"${FVAL[$name]}"
	for entry in "${entries[@]}"; do
		entry=${entry#"${entry%%[![:space:]]*}"}
		entry=${entry%"${entry##*[![:space:]]}"}
		[ "$entry" = "$item" ] && return 0
	done
	problem "$(shown "$name") does not list '$item'$(why "$2")"
}

do_verify() {
	validate_verify_opts
	read_flags
	local i
	for i in "${!REQ_KIND[@]}"; do
		case ${REQ_KIND[i]} in
		equal) check_equal "${REQ_ARG[i]}" "${REQ_WHY[i]}" ;;
		file) check_file "${REQ_ARG[i]}" "${REQ_WHY[i]}" ;;
		listed) check_listed "${REQ_ARG[i]}" "${REQ_WHY[i]}" ;;
		esac
	done
	[ "$PROBLEMS" = 0 ] || exit 1
	say "verify: $CONFIG_PATH ($LAYOUT) meets all ${#REQ_KIND[@]} requirements: aggregation is configured"
}

main() {
	parse_args "$@"
	case $ACTION in
	install-certs) install_certs ;;
	remove-certs) remove_certs ;;
	apply | check) do_apply ;;
	revert) do_revert ;;
	verify) do_verify ;;
	-h | --help | help) usage ;;
	*)
		usage
		die "unknown action '$ACTION'"
		;;
	esac
}

main "$@"
