# apiserver-flags-editor.awk: the config editor of apiserver-aggregation.sh (the host script).
#
# It reads a kube-apiserver config file, edits its flag list in memory and prints the new file; every
# byte outside the edited tokens and lines (comments, other flags, blank lines, CRLF line ends) is
# printed unchanged. Three layouts: env-file (the first NAME="..." assignment whose value holds
# --flags), systemd-unit (the first non-empty ExecStart= with its continuations) and static-pod (the
# command: list, else args:, of one container in spec.containers). Behaviour in detail:
# components/scripts/README.md ("apply, step by step", "revert").
#
# Why awk: it is on every master that runs kube-apiserver (Debian/Ubuntu's mawk, RHEL's gawk, busybox's
# awk on minimal images), so the program installs nothing there, and no python. Hence POSIX awk only:
# no gawk extensions (gensub, RT, length(array), arrays of arrays), tested with mawk and gawk.
#
#   awk -f apiserver-flags-editor.awk -v mode=apply|revert|list -v layout=env-file|systemd-unit|static-pod
#       [-v flags="--NAME=VALUE ..."]   apply: the flags to set (one word each, separated by spaces)
#       [-v record_file=FILE]           the record of the previous apply: NAME<TAB>added|replaced<TAB>OLD
#                                       (OLD: the token, static-pod the whole line, it replaced)
#       [-v new_record_file=FILE]       apply: writes the record of this result there
#       [-v report_file=FILE]           writes the changes there, one a line (+ added, ~ replaced,
#                                       - removed, = already set)
#       [-v cert_dir=DIR] [-v volume_name=NAME] [-v container=NAME]   static-pod: the hostPath volume
#                                       apply mounts when the pod does not mount DIR; the container
#       [-v no_final_newline=1]         the input's last line has no newline (awk cannot tell): nor has
#                                       the output's
#       CONFIG_FILE > NEW_FILE
#
# mode=list prints the flags of the region instead (NAME<TAB>VALUE, or NAME alone for a bare flag;
# static-pod: then the container's args:), for verify. A file the editor cannot read as its layout is
# a message on stderr and exit status 3, with nothing on stdout.

# ------------------------------------------------------------------------------------ small helpers
function spaces(count,   s) { s = ""; while (count-- > 0) s = s " "; return s }
function leading_space(s) { match(s, /^[ \t]*/); return substr(s, 1, RLENGTH) }
function is_blank(s) { return s ~ /^[ \t]*$/ }
function is_comment_or_blank(s) { return is_blank(s) || s ~ /^[ \t]*#/ }
function fail(message) { if (error_message == "") error_message = message }
function insert_line(at, text, cr,   i) {
	for (i = line_count; i >= at; i--) { lines[i + 1] = lines[i]; has_cr[i + 1] = has_cr[i] }
	lines[at] = text; has_cr[at] = cr; line_count++
}
function delete_line(at,   i) {
	for (i = at; i < line_count; i++) { lines[i] = lines[i + 1]; has_cr[i] = has_cr[i + 1] }
	delete lines[line_count]; delete has_cr[line_count]; line_count--
}
# unquote: the value of a shell/YAML word: "..." (with \" and \\), '...' (with ''), or bare (a trailing
# " # comment" dropped)
function unquote(v) {
	if (v ~ /^".*"$/) { v = substr(v, 2, length(v) - 2); gsub(/\\"/, "\"", v); gsub(/\\\\/, "\\", v); return v }
	if (length(v) >= 2 && substr(v, 1, 1) == squote && substr(v, length(v)) == squote) {
		v = substr(v, 2, length(v) - 2); gsub(squote squote, squote, v); return v
	}
	sub(/[ \t]+#.*$/, "", v); sub(/[ \t]+$/, "", v)
	return v
}
# yaml_scalar: TEXT as a YAML list item, quoted only when YAML would read it otherwise
function yaml_scalar(text) {
	if (text ~ /^[A-Za-z0-9_.\/=,:@+-]+$/ && text !~ /:$/) return text
	gsub(/\\/, "\\\\", text); gsub(/"/, "\\\"", text)
	return "\"" text "\""
}

# ---------------------------------------------------------------------------------------- the region
# region_first..region_last: the lines that hold the flag list; on each line j of it, content_start[j]
# ..content_end[j] are the columns of the list (inside the quotes, after the binary, before a trailing
# backslash), and before_start[j] is where the text that comes before a token on that line starts (a
# token alone on its line is removed with the line).
function find_region() {
	region_first = region_last = 0
	if (layout == "env-file") return find_env_region()
	if (layout == "systemd-unit") return find_unit_region()
	if (layout == "static-pod") return find_pod_region()
	fail("unknown layout '" layout "' (env-file, systemd-unit or static-pod)")
	return 0
}
function find_env_region(   i, j, text, value_start, quote, k, column) {
	for (i = 1; i <= line_count; i++) {
		text = lines[i]
		if (text ~ /^[ \t]*#/) continue
		if (!match(text, /^[ \t]*(export[ \t]+)?[A-Za-z_][A-Za-z0-9_]*=/)) continue
		value_start = RSTART + RLENGTH
		quote = substr(text, value_start, 1)
		if (quote != "\"" && quote != squote) quote = ""
		column = (quote == "") ? value_start : value_start + 1
		region_first = i; region_last = 0; j = i; content_start[i] = column; before_start[i] = column
		while (1) {
			if (quote != "") {
				k = index(substr(lines[j], column), quote)
				if (k > 0) { content_end[j] = column + k - 2; region_last = j; break }
				content_end[j] = (lines[j] ~ /\\$/) ? length(lines[j]) - 1 : length(lines[j])
			} else if (lines[j] ~ /\\$/) {
				content_end[j] = length(lines[j]) - 1
			} else { content_end[j] = length(lines[j]); region_last = j; break }
			if (j >= line_count) break
			j++; column = 1; content_start[j] = 1; before_start[j] = 1
		}
		if (!region_last) { fail("unterminated quoted value starting at line " i); return 0 }
		if (region_has_flags()) return 1
		i = region_last
	}
	region_first = region_last = 0
	fail("no variable assignment holding --flags (such as KUBE_APISERVER_OPTS=\"--a=b ...\") found")
	return 0
}
function region_has_flags(   j) {
	for (j = region_first; j <= region_last; j++)
		if ((" " substr(lines[j], content_start[j], content_end[j] - content_start[j] + 1)) ~ /[ \t]--[A-Za-z0-9]/) return 1
	return 0
}
function find_unit_region(   i, j, column, rest) {
	for (i = 1; i <= line_count; i++) {
		if (!match(lines[i], /^[ \t]*ExecStart[ \t]*=[ \t]*/)) continue
		column = RSTART + RLENGTH
		rest = substr(lines[i], column)
		if (is_blank(rest) || rest ~ /^\\$/) continue
		match(rest, /^[^ \t]+/) # the binary: never edited
		region_first = i; content_start[i] = column + RLENGTH; before_start[i] = 1; j = i
		while (lines[j] ~ /\\$/ && j < line_count) {
			content_end[j] = length(lines[j]) - 1; j++; content_start[j] = 1; before_start[j] = 1
		}
		content_end[j] = (lines[j] ~ /\\$/) ? length(lines[j]) - 1 : length(lines[j])
		region_last = j
		return 1
	}
	fail("no ExecStart= line found")
	return 0
}
# static-pod: the container named `container` in spec.containers (never an initContainer); its
# command: list is the region (its args: when it has no command:). container_first..container_last: the
# lines of the container; container_key_indent: the indent of its keys; args_key_line: its args: line
# when command: is the region (checked, never edited); list_key_line: the key line of the region.
function find_pod_region(   k, first, last, command_line, args_line) {
	k = find_key("containers", 1)
	if (!k || !list_bounds(k)) { fail("no spec.containers: block list found"); return 0 }
	for (first = list_first; first <= list_last; first = last + 1) {
		last = item_end(first)
		if (key_value(first, last, "name", list_indent + 2) != container) continue
		container_first = first; container_last = last; container_key_indent = list_indent + 2; args_key_line = 0
		command_line = key_line(first, last, "command", container_key_indent)
		args_line = key_line(first, last, "args", container_key_indent)
		if (command_line) { args_key_line = args_line; return block_list(command_line, "command") }
		if (args_line) return block_list(args_line, "args")
		fail("the container " container " has neither command: nor args:"); return 0
	}
	fail("no container named " container " in spec.containers (apiserver.containerName names the kube-apiserver container)")
	return 0
}
# is_key_at: whether S holds `KEY:` at indent INDENT (a mapping key, or the first key of a list item:
# "- key:")
function is_key_at(s, indent, key,   rest, after) {
	if (substr(s, 1, indent) != spaces(indent) && substr(s, 1, indent) != spaces(indent - 2) "- ") return 0
	rest = substr(s, indent + 1)
	if (substr(rest, 1, length(key) + 1) != key ":") return 0
	after = substr(rest, length(key) + 2, 1)
	return after == "" || after == " " || after == "\t"
}
function key_line(first, last, key, indent,   j) {
	for (j = first; j <= last; j++) if (is_key_at(lines[j], indent, key)) return j
	return 0
}
function key_value(first, last, key, indent,   j, v) {
	j = key_line(first, last, key, indent)
	if (!j) return ""
	v = substr(lines[j], indent + length(key) + 2); sub(/^[ \t]+/, "", v)
	return unquote(v)
}
function container_key(key) { return key_line(container_first, container_last, key, container_key_indent) }
function is_item(s, indent) { return substr(s, 1, indent) == spaces(indent) && substr(s, indent + 1, 2) == "- " }
# block_list: the region is the items of the block list under the key on line KEY_AT (comment and blank
# lines between items belong to it); item_indent: the indent of its "- "
function block_list(key_at, what,   j) {
	j = key_at + 1
	while (j <= line_count && is_comment_or_blank(lines[j])) j++
	if (lines[key_at] !~ /:[ \t]*$/ || j > line_count || !match(lines[j], /^[ ]*- /)) {
		fail("the " what ": of the container " container " is not a block list (one \"- item\" per line)"); return 0
	}
	item_indent = RLENGTH - 2; region_first = region_last = j; list_key_line = key_at
	for (j++; j <= line_count; j++) {
		if (is_item(lines[j], item_indent)) region_last = j
		else if (!is_comment_or_blank(lines[j])) break
	}
	return 1
}
# read_args_flags: args_count, args_flag[1..args_count] = the --flags in the container's args: when
# command: is the region (a block list or a one-line [a, b] list)
function read_args_flags(   s, j, indent, v, count, items, i) {
	args_count = 0
	if (!args_key_line) return 1
	s = substr(lines[args_key_line], container_key_indent + 6); sub(/^[ \t]+/, "", s)
	if (s != "" && s !~ /^#/) {
		if (s !~ /^\[[^\]]*\][ \t]*(#.*)?$/) {
			fail("the args: of the container " container " is neither a block list nor a one-line [a, b] list: cannot check it for the flags this program sets")
			return 0
		}
		sub(/\][ \t]*(#.*)?$/, "", s)
		count = split(substr(s, 2), items, ",")
		for (i = 1; i <= count; i++) {
			v = items[i]; sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v); v = unquote(v)
			if (substr(v, 1, 2) == "--") args_flag[++args_count] = v
		}
		return 1
	}
	j = args_key_line + 1
	while (j <= line_count && is_comment_or_blank(lines[j])) j++
	if (j > line_count || !match(lines[j], /^[ ]*- /)) return 1
	indent = RLENGTH - 2
	for (; j <= line_count; j++) {
		if (is_item(lines[j], indent)) { v = unquote(substr(lines[j], indent + 3)); if (substr(v, 1, 2) == "--") args_flag[++args_count] = v }
		else if (!is_comment_or_blank(lines[j])) break
	}
	return 1
}
# check_args: refuse a flag this program sets that the container also sets in args: (kube-apiserver
# reads command then args; the last value wins, so it would override ours)
function check_args(   i, name) {
	if (layout != "static-pod" || !read_args_flags()) return error_message == ""
	for (i = 1; i <= args_count; i++) {
		name = args_flag[i]; if (index(name, "=")) name = substr(name, 1, index(name, "=") - 1)
		if (name in wanted) {
			fail("the container " container " sets " name " in args:, which kube-apiserver reads after command: (the last value wins, so it would override the value this program sets): move it into command: or remove it (kubeadm: ClusterConfiguration.apiServer.extraArgs), then run again; nothing written")
			return 0
		}
	}
	return 1
}

# ---------------------------------------------------------------------------------------- the tokens
# The --flags of the region: token_line, token_start (column), token_length, token_text (the bytes),
# token_name, token_value and token_form: eq (--name=value), sep (--name value), bare (--name).
function scan_tokens() {
	token_count = 0
	if (!find_region()) return 0
	if (layout == "static-pod") scan_list_items(); else scan_line_tokens()
	return 1
}
function add_token(j, start, len, text,   eq) {
	token_count++
	token_line[token_count] = j; token_start[token_count] = start; token_length[token_count] = len
	token_text[token_count] = text
	eq = index(text, "=")
	if (eq) {
		token_name[token_count] = substr(text, 1, eq - 1); token_value[token_count] = substr(text, eq + 1)
		token_form[token_count] = "eq"
	} else { token_name[token_count] = text; token_value[token_count] = ""; token_form[token_count] = "bare" }
}
function scan_list_items(   j, v) {
	for (j = region_first; j <= region_last; j++) {
		if (!is_item(lines[j], item_indent)) continue
		v = unquote(substr(lines[j], item_indent + 3))
		if (substr(v, 1, 2) == "--") add_token(j, 1, length(lines[j]), v)
	}
}
function scan_line_tokens(   j, segment, done, start, len, text, v) {
	for (j = region_first; j <= region_last; j++) {
		segment = substr(lines[j], content_start[j], content_end[j] - content_start[j] + 1); done = 0
		while (match(substr(segment, done + 1), /[^ \t]+/)) {
			start = done + RSTART; len = RLENGTH; text = substr(segment, start, len); done = start + len - 1
			if (substr(text, 1, 2) != "--") continue
			add_token(j, content_start[j] + start - 1, len, text)
			# "--name value" on the same line: the value belongs to the flag
			if (token_form[token_count] == "bare" && match(substr(segment, done + 1), /^[ \t]+[^ \t-][^ \t]*/)) {
				v = substr(segment, done + 1, RLENGTH); token_length[token_count] += RLENGTH; done += RLENGTH
				sub(/^[ \t]+/, "", v); token_value[token_count] = v; token_form[token_count] = "sep"
				token_text[token_count] = substr(lines[j], token_start[token_count], token_length[token_count])
			}
		}
	}
}
# raw_token: the bytes a record keeps of token K (static-pod: its whole line)
function raw_token(k) {
	return (layout == "static-pod") ? lines[token_line[k]] : substr(lines[token_line[k]], token_start[k], token_length[k])
}
# find_flag: the token of flag NAME after SKIP earlier ones (0: none)
function find_flag(name, skip,   k) {
	for (k = 1; k <= token_count; k++) if (token_name[k] == name && skip-- <= 0) return k
	return 0
}

# ---------------------------------------------------------------------- edits (then scan_tokens again)
function set_token(k, text,   j) {
	j = token_line[k]
	if (layout == "static-pod") { lines[j] = spaces(item_indent) "- " yaml_scalar(text); return }
	lines[j] = substr(lines[j], 1, token_start[k] - 1) text substr(lines[j], token_start[k] + token_length[k])
}
function restore_token(k, raw,   j) {
	j = token_line[k]
	if (layout == "static-pod") { lines[j] = raw; return }
	lines[j] = substr(lines[j], 1, token_start[k] - 1) raw substr(lines[j], token_start[k] + token_length[k])
}
function remove_token(k,   j, before, after, space) {
	j = token_line[k]
	if (layout == "static-pod") { delete_line(j); return }
	before = substr(lines[j], before_start[j], token_start[k] - before_start[j])
	after = substr(lines[j], token_start[k] + token_length[k], content_end[j] - token_start[k] - token_length[k] + 1)
	if (j != region_first && j != region_last && is_blank(before) && is_blank(after)) { delete_line(j); return }
	if (!is_blank(before)) {
		match(before, /[ \t]*$/); space = RLENGTH
		lines[j] = substr(lines[j], 1, token_start[k] - 1 - space) substr(lines[j], token_start[k] + token_length[k])
	} else if (match(after, /^[ \t]+[^ \t]/)) {
		lines[j] = substr(lines[j], 1, token_start[k] - 1) substr(lines[j], token_start[k] + token_length[k] + RLENGTH - 1)
	} else {
		lines[j] = substr(lines[j], 1, token_start[k] - 1) substr(lines[j], token_start[k] + token_length[k])
	}
}
# add_flag: TEXT (a token; with IS_RAW, static-pod: a whole recorded line) added in the file's own style
function add_flag(text, is_raw,   indent, suffix, segment, j) {
	if (layout == "static-pod") {
		insert_line(region_last + 1, is_raw ? text : spaces(item_indent) "- " yaml_scalar(text), has_cr[region_last])
		return
	}
	if (region_last > region_first) {
		# one or more flags per continuation line: a new line before the last one, same indent and
		# the same continuation suffix as the line above it
		indent = leading_space(lines[region_last])
		if (substr(lines[region_last], length(indent) + 1, 2) != "--")
			indent = (region_first + 1 < region_last) ? leading_space(lines[region_first + 1]) : "  "
		suffix = ""
		if (match(lines[region_last - 1], /[ \t]*\\$/)) suffix = substr(lines[region_last - 1], RSTART)
		insert_line(region_last, indent text suffix, has_cr[region_last])
		return
	}
	j = region_first
	segment = substr(lines[j], content_start[j], content_end[j] - content_start[j] + 1)
	if (is_blank(segment) && layout == "env-file") {
		lines[j] = substr(lines[j], 1, content_start[j] - 1) text substr(lines[j], content_start[j]); return
	}
	match(segment, /[ \t]*$/)
	j = content_start[j] + RSTART - 1
	lines[region_first] = substr(lines[region_first], 1, j - 1) " " text substr(lines[region_first], j)
}

# ---------------------------------------------------------------------------- static-pod: the volume
# find_key: the first line from FROM that is `KEY:` alone (a block follows)
function find_key(key, from,   i) {
	for (i = from; i <= line_count; i++) if (lines[i] ~ ("^[ ]*(- )?" key ":[ \t]*$")) return i
	return 0
}
# list_bounds: list_first..list_last = the block list under the key on line K, list_indent its "- "
# indent; 0 when no list follows the key
function list_bounds(k,   j, indent) {
	list_first = 0; list_last = k
	if (k >= line_count || !match(lines[k + 1], /^[ ]*- /)) return 0
	list_indent = RLENGTH - 2; list_first = k + 1; list_last = k + 1
	for (j = k + 2; j <= line_count; j++) {
		if (is_comment_or_blank(lines[j])) continue # YAML ignores them; the list goes on after them
		indent = length(leading_space(lines[j]))
		if (is_item(lines[j], list_indent) || indent > list_indent) list_last = j; else break
	}
	return 1
}
function item_end(first,   j) {
	for (j = first + 1; j <= list_last; j++) if (is_item(lines[j], list_indent)) return j - 1
	return list_last
}
function item_field(first, last, field,   j, s) {
	for (j = first; j <= last; j++) {
		s = lines[j]; sub(/^[ ]*(- )?/, "", s)
		if (index(s, field ":") == 1) { s = substr(s, length(field) + 2); sub(/^[ \t]+/, "", s); return unquote(s) }
	}
	return ""
}
function covers(mount_path, dir) {
	if (mount_path != "/") sub(/\/+$/, "", mount_path)
	return mount_path != "" && (mount_path == "/" || dir == mount_path || substr(dir, 1, length(mount_path) + 1) == mount_path "/")
}
function volume_host_path(name,   k, first, last) {
	k = find_key("volumes", 1)
	if (!k || !list_bounds(k)) return ""
	for (first = list_first; first <= list_last; first = last + 1) {
		last = item_end(first)
		if (item_field(first, last, "name") == name) return item_field(first, last, "path")
	}
	return ""
}
# mounted_path: the mountPath of the container that covers cert_dir from a hostPath volume of the same
# path ("" when none does)
function mounted_path(   k, first, last, path, count, i) {
	k = container_key("volumeMounts")
	if (!k || !list_bounds(k)) return ""
	count = 0
	for (first = list_first; first <= list_last; first = last + 1) {
		last = item_end(first); path = item_field(first, last, "mountPath")
		if (covers(path, cert_dir)) { count++; covering_path[count] = path; covering_name[count] = item_field(first, last, "name") }
	}
	for (i = 1; i <= count; i++) {
		path = volume_host_path(covering_name[i])
		if (path == covering_path[i] || path == covering_path[i] "/") return covering_path[i]
	}
	return ""
}
function remove_item(key, from, name,   k, first, last, j) {
	k = (key == "volumeMounts") ? container_key(key) : find_key(key, from)
	if (!k || !list_bounds(k)) return 0
	for (first = list_first; first <= list_last; first = last + 1) {
		last = item_end(first)
		if (item_field(first, last, "name") == name) {
			for (j = last; j >= first; j--) delete_line(j)
			if ((("@" key "-key") in record_kind) && !list_bounds(k)) delete_line(k)
			return 1
		}
	}
	return 0
}
# insert_next: TEXT at line insert_at, which moves on (the line end of the line above)
function insert_next(text) { insert_line(insert_at, text, has_cr[insert_at > 1 ? insert_at - 1 : 1]); insert_at++ }
function ensure_mount(   path, k, indent) {
	path = mounted_path()
	if (path != "") { report("= " cert_dir " is already mounted into the pod (mountPath " path ")"); return }
	k = container_key("volumeMounts")
	if (k && list_bounds(k)) {
		insert_at = list_last + 1; indent = spaces(list_indent)
	} else if (k) {
		fail("volumeMounts: of the container is not a block list"); return
	} else {
		insert_at = region_last + 1; indent = spaces(container_key_indent)
		insert_next(indent "volumeMounts:"); record_change("@volumeMounts-key", "added", "")
	}
	insert_next(indent "- mountPath: " yaml_scalar(cert_dir))
	insert_next(indent "  name: " volume_name)
	insert_next(indent "  readOnly: true")
	record_change("@volumeMounts", "added", volume_name)
	k = find_key("volumes", 1)
	if (k && list_bounds(k)) {
		insert_at = list_last + 1; indent = spaces(list_indent)
	} else if (k) {
		fail("volumes: of the pod is not a block list"); return
	} else {
		insert_at = find_key("containers", 1)
		if (!insert_at) { fail("no containers: key found"); return }
		indent = leading_space(lines[insert_at])
		insert_next(indent "volumes:"); record_change("@volumes-key", "added", "")
	}
	insert_next(indent "- hostPath:")
	insert_next(indent "    path: " yaml_scalar(cert_dir))
	insert_next(indent "    type: DirectoryOrCreate")
	insert_next(indent "  name: " volume_name)
	record_change("@volumes", "added", volume_name)
	report("+ hostPath volume " volume_name " mounted at " cert_dir " (the pod did not mount it)")
}

# ------------------------------------------------------------------------------ the record, the report
# record_name[1..record_count] in order, record_kind[NAME] (added|replaced), record_raw[NAME] (the token,
# static-pod the line, it replaced; for "@volumes"/"@volumeMounts", the volume's name). Names starting
# with "@" are the static-pod volume and mount (and "-key": their list key, added with them).
function record_change(name, kind, raw) {
	if (name in record_kind) return
	record_kind[name] = kind; record_raw[name] = raw; record_name[++record_count] = name
}
function report(text) { if (report_file != "") print text > report_file }

# ------------------------------------------------------------------------------------ apply, revert
function undo_flag(name, kind, raw,   k, guard) {
	if (!scan_tokens()) return
	if (kind == "added") {
		for (guard = 0; guard < 1000 && (k = find_flag(name, 0)); guard++) { remove_token(k); if (!scan_tokens()) return }
		return
	}
	k = find_flag(name, 0)
	if (k) restore_token(k, raw)
	else add_flag(raw, 1)
}
function undo_volumes() {
	if (layout != "static-pod") return
	if (!scan_tokens()) return
	if ("@volumeMounts" in record_kind) remove_item("volumeMounts", list_key_line, record_raw["@volumeMounts"])
	if (!scan_tokens()) return
	if ("@volumes" in record_kind) remove_item("volumes", 1, record_raw["@volumes"])
}
function apply_flags(   i, r, name, k, duplicate, guard) {
	if (!scan_tokens() || !check_args()) return
	# what a previous apply set for a flag no longer wanted goes first
	for (r = 1; r <= record_count; r++) {
		name = record_name[r]
		if (substr(name, 1, 1) == "@" || (name in wanted)) continue
		undo_flag(name, record_kind[name], record_raw[name]); dropped[name] = 1
		report("- " name " (no longer configured: " (record_kind[name] == "added" ? "removed" : "restored " record_raw[name]) ")")
	}
	for (i = 1; i <= want_count; i++) {
		name = want_name[i]
		if (!scan_tokens()) return
		k = find_flag(name, 0)
		if (!k) {
			add_flag(want_token[i], 0); record_change(name, "added", "")
			report("+ " want_token[i])
		} else if (token_form[k] == "eq" && token_value[k] == want_value[i]) {
			report("= " want_token[i])
		} else {
			record_change(name, "replaced", raw_token(k))
			report("~ " name ": " token_text[k] " -> " want_token[i])
			set_token(k, want_token[i])
		}
		for (guard = 0; guard < 1000; guard++) {
			if (!scan_tokens()) return
			duplicate = find_flag(name, 1)
			if (!duplicate) break
			report("- " token_text[duplicate] " (duplicate of " name ": each flag is set once; a revert restores it from the backup only)")
			remove_token(duplicate)
		}
	}
	if (layout == "static-pod") {
		# the mount of a previous apply goes, then one is added again unless the pod covers cert_dir
		undo_volumes()
		if (("@volumeMounts" in record_kind) || ("@volumes" in record_kind)) {
			delete record_kind["@volumeMounts"]; delete record_kind["@volumes"]
			delete record_kind["@volumeMounts-key"]; delete record_kind["@volumes-key"]
		}
		if (scan_tokens()) ensure_mount()
	}
}
function revert_flags(   r, name) {
	for (r = record_count; r >= 1; r--) {
		name = record_name[r]
		if (substr(name, 1, 1) == "@") continue
		undo_flag(name, record_kind[name], record_raw[name])
		report((record_kind[name] == "added" ? "- " name " (removed)" : "~ " name " (restored " record_raw[name] ")"))
	}
	undo_volumes()
	if ("@volumes" in record_kind) report("- hostPath volume " record_raw["@volumes"] " (removed)")
}
# list_flags (verify): the flags of the region, NAME<TAB>VALUE, or NAME alone when bare
function list_flags(   k, v) {
	if (!scan_tokens()) { print error_message > "/dev/stderr"; return }
	for (k = 1; k <= token_count; k++) print token_name[k] (token_form[k] == "bare" ? "" : "\t" token_value[k])
	# static-pod: then the args: of the container (kube-apiserver reads them after command:)
	if (layout != "static-pod") return
	if (!read_args_flags()) { print error_message > "/dev/stderr"; return }
	for (k = 1; k <= args_count; k++) {
		v = args_flag[k]
		print (index(v, "=") ? substr(v, 1, index(v, "=") - 1) "\t" substr(v, index(v, "=") + 1) : v)
	}
}

# ------------------------------------------------------------------------------------------ the input
function read_wanted(   count, words, i, eq) {
	count = split(flags, words, " ")
	for (i = 1; i <= count; i++) {
		eq = index(words[i], "=")
		want_name[++want_count] = eq ? substr(words[i], 1, eq - 1) : words[i]
		want_value[want_count] = eq ? substr(words[i], eq + 1) : ""
		want_token[want_count] = words[i]
		wanted[want_name[want_count]] = 1
	}
}
function read_record(   text, tab, name) {
	if (record_file == "") return
	while ((getline text < record_file) > 0) {
		tab = index(text, "\t"); name = substr(text, 1, tab - 1); text = substr(text, tab + 1)
		tab = index(text, "\t")
		if (!(name in record_kind)) record_name[++record_count] = name
		record_kind[name] = substr(text, 1, tab - 1); record_raw[name] = substr(text, tab + 1)
	}
	close(record_file)
}
function write_record(   r, name) {
	printf "" > new_record_file
	for (r = 1; r <= record_count; r++) {
		name = record_name[r]
		if ((name in dropped) || !(name in record_kind) || (name in written)) continue
		written[name] = 1
		printf "%s\t%s\t%s\n", name, record_kind[name], record_raw[name] > new_record_file
	}
}

# read_line: one input line; a CR before the newline is kept apart and printed back
function read_line(text,   cr) {
	cr = 0
	if (substr(text, length(text)) == "\r") { text = substr(text, 1, length(text) - 1); cr = 1 }
	lines[++line_count] = text; has_cr[line_count] = cr
}
function print_lines(   i) {
	for (i = 1; i <= line_count; i++)
		printf "%s%s%s", lines[i], (has_cr[i] ? "\r" : ""), (i < line_count || no_final_newline != 1 ? "\n" : "")
}

BEGIN { squote = "'"; line_count = 0; want_count = 0; record_count = 0; error_message = "" }
{ read_line($0) }
END {
	if (mode == "list") { list_flags(); exit (error_message != "") ? 3 : 0 }
	if (mode != "apply" && mode != "revert") { print "unknown mode '" mode "' (apply, revert or list)" > "/dev/stderr"; exit 3 }
	read_wanted()
	read_record()
	if (report_file != "") printf "" > report_file
	if (mode == "apply") apply_flags(); else revert_flags()
	if (error_message != "") { print error_message > "/dev/stderr"; exit 3 }
	print_lines()
	if (mode == "apply" && new_record_file != "") write_record()
}
