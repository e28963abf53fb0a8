// Copyright 2026 metrics-aggregation authors.
//
// pulumi-language-python: a small, project-written Python language host for the
// Pulumi engine (the "python" language plugin).
//
// Why it exists: the upstream host lives in its own Go module
// (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3), which has only
// pseudo-versions and which the Go module proxy available to this project does not
// serve at all (every version query answers 403). The project rule is "build only from
// modules the proxy serves", so toolchain/build.sh builds this adapter instead.
//
// What it does: it speaks the engine's LanguageRuntime gRPC protocol (from the served
// github.com/pulumi/pulumi/sdk/v3 module) and runs the program through the upstream
// Python executor script `pulumi-language-python-exec`, which build.sh copies next to
// this binary from the sdk/v3 module of the same release as the PyPI `pulumi` package.
//
// Supported: Run (preview/up/destroy/refresh), GetRequiredPackages (reads the
// pulumi-plugin.json files of the installed Python packages), InstallDependencies
// (virtualenv + `pip install -r requirements.txt`), GetPluginInfo, About,
// GetProgramDependencies, RuntimeOptionsPrompts (none), RunPlugin for policy packs (kind analyzer:
// `python -u -m pulumi.policy <engine> <pack dir>`, which the engine uses since v3.221, behind
// upstream's policy proxy so that the pack starts with the stack's PULUMI_* environment).
// Runtime options from Pulumi.yaml: `virtualenv` (relative to the project root) and
// `toolchain: pip` (the default). uv and poetry toolchains are not supported.
// Not supported (Unimplemented): code generation (GeneratePackage/Program/Project),
// Template, Pack, RunPlugin for Python component providers (PulumiPlugin.yaml).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	sdk "github.com/pulumi/pulumi/sdk/v3"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"metrics-aggregation/toolchain/adapters/internal/serve"
)

const (
	execName = "pulumi-language-python-exec"
	// Exit code of the executor after it has shown the user an actionable message.
	bailExitCode = 32
)

func main() {
	executor := ""
	engineAddress := ""
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case serve.IsVersionFlag(a):
			fmt.Println(serve.Version)
			return
		case a == "-use-executor" || a == "--use-executor":
			if i+1 < len(args) {
				executor = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "-use-executor=") || strings.HasPrefix(a, "--use-executor="):
			executor = a[strings.Index(a, "=")+1:]
		case strings.HasPrefix(a, "-"):
			// Other engine flags (-tracing=…, -root=…, -logtostderr, -v=…) are accepted and ignored.
		default:
			engineAddress = a // the engine address is the last positional argument
		}
	}

	if executor == "" {
		self, err := os.Executable()
		if err == nil {
			if real, rerr := filepath.EvalSymlinks(self); rerr == nil {
				self = real
			}
			executor = filepath.Join(filepath.Dir(self), execName)
		}
	}
	if _, err := os.Stat(executor); err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: missing executor %q: %v\n", executor, err)
		os.Exit(1)
	}

	host := &pythonHost{executor: executor, engineAddress: engineAddress}
	serve.Serve("pulumi-language-python", func(srv grpc.ServiceRegistrar) {
		pulumirpc.RegisterLanguageRuntimeServer(srv, host)
	})
}

type pythonHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	executor      string
	engineAddress string
}

// pythonEnv says which interpreter runs the program and with which environment.
type pythonEnv struct {
	python string   // interpreter path or name
	venv   string   // absolute virtualenv dir, "" if none
	env    []string // environment for the interpreter
}

// options returns the runtime options of Pulumi.yaml (runtime.options).
func options(info *pulumirpc.ProgramInfo) map[string]any {
	if info == nil || info.GetOptions() == nil {
		return map[string]any{}
	}
	return info.GetOptions().AsMap()
}

func rootDir(info *pulumirpc.ProgramInfo, fallback string) string {
	if info != nil && info.GetRootDirectory() != "" {
		return info.GetRootDirectory()
	}
	if fallback != "" {
		return fallback
	}
	wd, _ := os.Getwd()
	return wd
}

// venvDir resolves the `virtualenv` runtime option (or the uv default `.venv`).
func venvDir(info *pulumirpc.ProgramInfo, fallbackRoot string) (string, error) {
	opts := options(info)
	tc, _ := opts["toolchain"].(string)
	switch tc {
	case "", "pip":
	case "uv":
	default:
		return "", fmt.Errorf("python toolchain %q is not supported by this language host (use pip)", tc)
	}
	venv, _ := opts["virtualenv"].(string)
	if venv == "" && tc == "uv" {
		venv = ".venv"
	}
	if venv == "" {
		return "", nil
	}
	if !filepath.IsAbs(venv) {
		venv = filepath.Join(rootDir(info, fallbackRoot), venv)
	}
	return filepath.Clean(venv), nil
}

func resolvePython(info *pulumirpc.ProgramInfo, fallbackRoot string, mustExist bool) (*pythonEnv, error) {
	venv, err := venvDir(info, fallbackRoot)
	if err != nil {
		return nil, err
	}
	return resolvePythonEnv(venv, os.Environ(), mustExist)
}

// resolvePythonEnv is resolvePython for a given virtualenv ("" = none) and base environment.
func resolvePythonEnv(venv string, base []string, mustExist bool) (*pythonEnv, error) {
	env := []string{}
	for _, kv := range base {
		if strings.HasPrefix(kv, "PYTHONHOME=") {
			continue
		}
		env = append(env, kv)
	}
	if venv == "" {
		py := os.Getenv("PULUMI_PYTHON_CMD")
		if py == "" {
			py = "python3"
			if _, err := exec.LookPath(py); err != nil {
				py = "python"
			}
		}
		return &pythonEnv{python: py, env: env}, nil
	}
	bin := filepath.Join(venv, "bin")
	if runtime.GOOS == "windows" {
		bin = filepath.Join(venv, "Scripts")
	}
	py := filepath.Join(bin, "python")
	if _, err := os.Stat(py); err != nil && mustExist {
		return nil, fmt.Errorf("the virtualenv %s does not exist (or has no bin/python); "+
			"create it with `pulumi install` or `python3 -m venv %s && %s/pip install -r requirements.txt`",
			venv, venv, bin)
	}
	out := env[:0:0]
	for _, kv := range env {
		switch {
		case strings.HasPrefix(kv, "PATH="):
			out = append(out, "PATH="+bin+string(os.PathListSeparator)+kv[len("PATH="):])
		case strings.HasPrefix(kv, "VIRTUAL_ENV="):
		default:
			out = append(out, kv)
		}
	}
	out = append(out, "VIRTUAL_ENV="+venv)
	return &pythonEnv{python: py, venv: venv, env: out}, nil
}

func (h *pythonHost) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: serve.Version}, nil
}

// pluginScan lists the pulumi-plugin.json files of the installed Python packages.
const pluginScan = `
import json, os, sys
seen, out = set(), []
for p in sys.path:
    if not p or not os.path.isdir(p):
        continue
    for name in sorted(os.listdir(p)):
        f = os.path.join(p, name, "pulumi-plugin.json")
        if name in seen or not os.path.isfile(f):
            continue
        seen.add(name)
        try:
            with open(f) as fh:
                out.append(json.load(fh))
        except Exception as e:
            print("pulumi-language-python: cannot read %s: %s" % (f, e), file=sys.stderr)
print(json.dumps(out))
`

type pluginJSON struct {
	Resource bool   `json:"resource"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Server   string `json:"server"`
}

func (h *pythonHost) requiredPlugins(ctx context.Context, info *pulumirpc.ProgramInfo) ([]pluginJSON, error) {
	py, err := resolvePython(info, "", true)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, py.python, "-c", pluginScan)
	cmd.Env = py.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if info != nil && info.GetProgramDirectory() != "" {
		cmd.Dir = info.GetProgramDirectory()
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing the Pulumi packages of %s: %w: %s", py.python, err, stderr.String())
	}
	var plugins []pluginJSON
	if err := json.Unmarshal(out, &plugins); err != nil {
		return nil, fmt.Errorf("parsing the Pulumi package list: %w", err)
	}
	res := plugins[:0]
	for _, p := range plugins {
		if !p.Resource || p.Name == "" {
			continue
		}
		if p.Version != "" && !strings.HasPrefix(p.Version, "v") {
			p.Version = "v" + p.Version
		}
		res = append(res, p)
	}
	return res, nil
}

func (h *pythonHost) GetRequiredPackages(ctx context.Context,
	req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	plugins, err := h.requiredPlugins(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	for _, p := range plugins {
		resp.Packages = append(resp.Packages, &pulumirpc.PackageDependency{
			Kind: "resource", Name: p.Name, Version: p.Version, Server: p.Server,
		})
	}
	return resp, nil
}

func (h *pythonHost) GetRequiredPlugins(ctx context.Context,
	req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	plugins, err := h.requiredPlugins(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPluginsResponse{}
	for _, p := range plugins {
		resp.Plugins = append(resp.Plugins, &pulumirpc.PluginDependency{
			Kind: "resource", Name: p.Name, Version: p.Version, Server: p.Server,
		})
	}
	return resp, nil
}

func (h *pythonHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	py, err := resolvePython(req.GetInfo(), req.GetPwd(), true)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}

	program := req.GetProgram()
	if program == "" && req.GetInfo() != nil {
		program = req.GetInfo().GetEntryPoint()
	}
	if program == "" {
		program = "."
	}

	args := []string{"-u", h.executor}
	add := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", h.engineAddress)
	add("project", req.GetProject())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", strconv.FormatBool(req.GetDryRun()))
	add("parallel", strconv.Itoa(int(req.GetParallel())))
	add("organization", req.GetOrganization())
	if req.GetInfo() != nil {
		add("root_directory", req.GetInfo().GetRootDirectory())
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	env := py.env
	if cfg := req.GetConfig(); cfg != nil {
		b, err := json.Marshal(cfg)
		if err != nil {
			return nil, fmt.Errorf("serializing the stack config: %w", err)
		}
		env = append(env, "PULUMI_CONFIG="+string(b))
	}
	// `[]` when the engine sends none, as upstream's constructConfigSecretKeys
	// (pulumi sdk/python/cmd/pulumi-language-python/main.go).
	secretKeys := "[]"
	if keys := req.GetConfigSecretKeys(); keys != nil {
		b, err := json.Marshal(keys)
		if err != nil {
			return nil, fmt.Errorf("serializing the secret config keys: %w", err)
		}
		secretKeys = string(b)
	}
	env = append(env, "PULUMI_CONFIG_SECRET_KEYS="+secretKeys)

	cmd := exec.CommandContext(ctx, py.python, args...)
	cmd.Env = env
	cmd.Dir = req.GetPwd()
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == bailExitCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("Problem executing program (could not run %s): %v", py.python, err),
		}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// streamWriter forwards InstallDependencies output to the engine (gRPC streams are not safe for
// concurrent Send: stdout and stderr share one mutex).
type streamWriter struct {
	server pulumirpc.LanguageRuntime_InstallDependenciesServer
	stderr bool
	mu     *sync.Mutex
}

func (w streamWriter) Write(p []byte) (int, error) {
	chunk := append([]byte(nil), p...)
	resp := &pulumirpc.InstallDependenciesResponse{Stdout: chunk}
	if w.stderr {
		resp = &pulumirpc.InstallDependenciesResponse{Stderr: chunk}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.server.Send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

// pluginWriter forwards RunPlugin output to the engine.
type pluginWriter struct {
	server pulumirpc.LanguageRuntime_RunPluginServer
	stderr bool
	mu     *sync.Mutex
}

func (w pluginWriter) Write(p []byte) (int, error) {
	chunk := append([]byte(nil), p...)
	resp := &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: chunk}}
	if w.stderr {
		resp = &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: chunk}}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.server.Send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

// RunPlugin runs a Python policy pack (PulumiPolicy.yaml) for the engine as upstream's RunPlugin does
// (pulumi sdk/python/cmd/pulumi-language-python/main.go, with sdk/policy_proxy.go of the same sdk/v3
// module): `python -u -m pulumi.policy <engine address> <pack dir>` in the pack's directory and
// virtualenv, started only once the engine's ConfigureStack reached the policy proxy, with the stack's
// PULUMI_* variables (packEnv) and then the request's env. The engine talks to the proxy, whose port
// goes out first; the proxy attaches to the pack's port and forwards everything to it.
func (h *pythonHost) RunPlugin(req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer) error {
	if req.GetKind() != "analyzer" {
		return fmt.Errorf("pulumi-language-python (metrics-aggregation adapter): running %q plugins "+
			"is not supported, only policy packs", req.GetKind())
	}
	ctx := server.Context()
	info := req.GetInfo()
	venv, err := venvDir(info, req.GetPwd())
	if err != nil {
		return err
	}
	py, err := resolvePythonEnv(venv, os.Environ(), true)
	if err != nil {
		return err
	}
	dir := req.GetPwd()
	if info != nil && info.GetProgramDirectory() != "" {
		dir = info.GetProgramDirectory()
	}
	args := append([]string{"-u", "-m", "pulumi.policy"}, req.GetArgs()...)
	args = append(args, dir)

	mu := &sync.Mutex{}
	proxy, stdout, err := sdk.NewPolicyProxy(ctx, pluginWriter{server: server, mu: mu})
	if err != nil {
		return fmt.Errorf("could not start policy pack proxy: %w", err)
	}
	config, err := proxy.AwaitConfiguration(ctx)
	if err != nil {
		return fmt.Errorf("could not get stack configuration: %w", err)
	}
	env, err := packEnv(config)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, py.python, args...)
	cmd.Dir = dir
	cmd.Env = append(append(py.env, env...), req.GetEnv()...)
	cmd.Stdout = stdout
	cmd.Stderr = pluginWriter{server: server, stderr: true, mu: mu}
	if err := cmd.Start(); err != nil {
		proxy.Abort(err)
		return fmt.Errorf("running %s: %w", py.python, err)
	}
	code := int32(0)
	if err := proxy.Attach(ctx, cmd); err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return fmt.Errorf("could not attach policy pack proxy: %w", err)
		}
		code = int32(exitErr.ExitCode())
	}
	mu.Lock()
	defer mu.Unlock()
	return server.Send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: code}})
}

// packEnv is the environment upstream's RunPlugin gives a policy pack from the engine's ConfigureStack
// (nil: the engine asked something else first, so no variables): PULUMI_ORGANIZATION, PULUMI_PROJECT,
// PULUMI_STACK, PULUMI_DRY_RUN and PULUMI_CONFIG (the config as JSON), each only when not empty.
// PULUMI_CONFIG_SECRET_KEYS is not among them: upstream sets it for programs (Run) only.
func packEnv(config *pulumirpc.AnalyzerStackConfigureRequest) ([]string, error) {
	var env []string
	if config == nil {
		return env, nil
	}
	add := func(k, v string) {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	add("PULUMI_ORGANIZATION", config.GetOrganization())
	add("PULUMI_PROJECT", config.GetProject())
	add("PULUMI_STACK", config.GetStack())
	add("PULUMI_DRY_RUN", strconv.FormatBool(config.GetDryRun()))
	if config.GetConfig() != nil {
		b, err := json.Marshal(config.GetConfig())
		if err != nil {
			return nil, fmt.Errorf("could not marshal stack configuration: %w", err)
		}
		add("PULUMI_CONFIG", string(b))
	}
	return env, nil
}

func (h *pythonHost) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	info := req.GetInfo()
	dir := req.GetDirectory()
	if info != nil && info.GetProgramDirectory() != "" {
		dir = info.GetProgramDirectory()
	}
	mu := &sync.Mutex{}
	stdout := streamWriter{server: server, mu: mu}
	stderr := streamWriter{server: server, stderr: true, mu: mu}
	run := func(env []string, name string, args ...string) error {
		fmt.Fprintf(stdout, "$ %s %s\n", name, strings.Join(args, " "))
		cmd := exec.CommandContext(server.Context(), name, args...)
		cmd.Dir = dir
		cmd.Env = env
		cmd.Stdout = stdout
		cmd.Stderr = stderr
		return cmd.Run()
	}

	py, err := resolvePython(info, dir, false)
	if err != nil {
		return err
	}
	if py.venv != "" {
		if _, err := os.Stat(py.python); err != nil {
			base := os.Getenv("PULUMI_PYTHON_CMD")
			if base == "" {
				base = "python3"
			}
			if err := run(os.Environ(), base, "-m", "venv", py.venv); err != nil {
				return fmt.Errorf("creating the virtualenv %s: %w", py.venv, err)
			}
		}
	}
	reqs := filepath.Join(dir, "requirements.txt")
	if _, err := os.Stat(reqs); err != nil {
		fmt.Fprintf(stdout, "no requirements.txt in %s: nothing to install\n", dir)
		return nil
	}
	if err := run(py.env, py.python, "-m", "pip", "install", "-r", reqs); err != nil {
		return fmt.Errorf("pip install -r %s: %w", reqs, err)
	}
	return nil
}

func (h *pythonHost) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	py, err := resolvePython(req.GetInfo(), "", true)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, py.python, "-c", "import platform; print(platform.python_version())")
	cmd.Env = py.env
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("running %s: %w", py.python, err)
	}
	exe := py.python
	if p, err := exec.LookPath(py.python); err == nil {
		exe = p
	}
	return &pulumirpc.AboutResponse{
		Executable: exe,
		Version:    strings.TrimSpace(string(out)),
		Metadata:   map[string]string{"toolchain": "pip", "virtualenv": py.venv, "host": "metrics-aggregation adapter"},
	}, nil
}

func (h *pythonHost) GetProgramDependencies(ctx context.Context,
	req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	py, err := resolvePython(req.GetInfo(), "", true)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, py.python, "-m", "pip", "list", "--format", "json",
		"--disable-pip-version-check")
	cmd.Env = py.env
	cmd.Stderr = io.Discard
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("pip list: %w", err)
	}
	var pkgs []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	if err := json.Unmarshal(out, &pkgs); err != nil {
		return nil, fmt.Errorf("parsing pip list: %w", err)
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, p := range pkgs {
		if !req.GetTransitiveDependencies() && !strings.HasPrefix(strings.ToLower(p.Name), "pulumi") {
			continue
		}
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return resp, nil
}

func (h *pythonHost) RuntimeOptionsPrompts(context.Context,
	*pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}
