// Copyright 2026 metrics-aggregation authors.

// Package provider is what the project's resource-provider stand-ins (tls, command) share: the
// lifecycle RPCs the engine calls on every provider, the wire (un)marshalling with the secret rules,
// the input comparison of Diff, and typed reads of a PropertyMap. Each stand-in embeds Base and adds
// its own Check, Diff, Create, Read, Update and Delete.
package provider

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"metrics-aggregation/toolchain/adapters/internal/serve"
)

// Base implements the RPCs that are the same for every stand-in.
type Base struct {
	pulumirpc.UnimplementedResourceProviderServer
	// Name is the Pulumi package name (tls, command): the schema's name and the error messages' prefix.
	Name string
	// Secrets are the output properties that are always secret, as the upstream schema marks them.
	Secrets map[string]bool
	// acceptSecrets: Configure said the engine takes secret values on the wire; without it the
	// outputs go out plain, as the engine would not understand the secret wrapper.
	acceptSecrets bool
}

// GetPluginInfo reports the stamped version, the release the stand-in answers for.
func (b *Base) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: serve.Version}, nil
}

// GetSchema answers with the name and version only: the full schema serves SDK generation, and the
// project uses the published Python SDKs.
func (b *Base) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	return &pulumirpc.GetSchemaResponse{Schema: fmt.Sprintf(`{"name":%q,"version":%q}`, b.Name, serve.Version)}, nil
}

// CheckConfig accepts any provider configuration: the stand-ins take none.
func (b *Base) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

// DiffConfig: with no configuration there is nothing that could replace the provider.
func (b *Base) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

// Configure records whether the engine accepts secrets.
func (b *Base) Configure(_ context.Context, req *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	b.acceptSecrets = req.GetAcceptSecrets()
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true}, nil
}

// Cancel: the operations stop with their request's context; there is nothing else to stop.
func (b *Base) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// Invoke: the stand-ins implement no functions, and say so by name rather than with Unimplemented.
func (b *Base) Invoke(_ context.Context, req *pulumirpc.InvokeRequest) (*pulumirpc.InvokeResponse, error) {
	return nil, fmt.Errorf("%s: function %s is not supported by this provider", b.Name, req.GetTok())
}

// Marshal puts outputs on the wire, unknowns kept, the Secrets properties wrapped as secrets when the
// engine accepts them.
func (b *Base) Marshal(m resource.PropertyMap) (*structpb.Struct, error) {
	out := resource.PropertyMap{}
	for k, v := range m {
		if b.Secrets[string(k)] && b.acceptSecrets && !v.IsNull() {
			v = resource.MakeSecret(v)
		}
		out[k] = v
	}
	return plugin.MarshalProperties(out, plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: b.acceptSecrets})
}

// CreateFrom answers a Create request: a preview echoes the inputs, as the outputs are not known
// before the resource exists; otherwise create makes the resource from the inputs and returns its ID
// and outputs.
func (b *Base) CreateFrom(req *pulumirpc.CreateRequest,
	create func(in resource.PropertyMap) (string, resource.PropertyMap, error),
) (*pulumirpc.CreateResponse, error) {
	in, err := Unmarshal(req.GetProperties(), true)
	if err != nil {
		return nil, err
	}
	if req.GetPreview() {
		props, err := b.Marshal(in)
		if err != nil {
			return nil, err
		}
		return &pulumirpc.CreateResponse{Properties: props}, nil
	}
	id, outs, err := create(in)
	if err != nil {
		return nil, err
	}
	props, err := b.Marshal(outs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
}

// UpdateFrom answers an Update request as CreateFrom does Create: a preview echoes the new inputs,
// otherwise update returns the outputs from the old state and the new inputs.
func (b *Base) UpdateFrom(req *pulumirpc.UpdateRequest,
	update func(olds, news resource.PropertyMap) (resource.PropertyMap, error),
) (*pulumirpc.UpdateResponse, error) {
	olds, news, err := OldsAndNews(req)
	if err != nil {
		return nil, err
	}
	outs := news
	if !req.GetPreview() {
		if outs, err = update(olds, news); err != nil {
			return nil, err
		}
	}
	props, err := b.Marshal(outs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

// Unmarshal reads properties for the resource operations: secrets unwrapped (the operations need the
// values, and Marshal marks the outputs again), nulls skipped, unknowns kept only when asked (the
// new inputs of a preview may have some; a state never has).
func Unmarshal(s *structpb.Struct, keepUnknowns bool) (resource.PropertyMap, error) {
	return plugin.UnmarshalProperties(s, plugin.MarshalOptions{KeepUnknowns: keepUnknowns, SkipNulls: true})
}

// OldsAndNews reads the state and the new inputs of a Diff or Update request.
func OldsAndNews(req interface {
	GetOlds() *structpb.Struct
	GetNews() *structpb.Struct
},
) (olds, news resource.PropertyMap, err error) {
	if olds, err = Unmarshal(req.GetOlds(), false); err != nil {
		return nil, nil, err
	}
	if news, err = Unmarshal(req.GetNews(), true); err != nil {
		return nil, nil, err
	}
	return olds, news, nil
}

// UnmarshalInputs reads the news of Check as the program sent them, unknowns and secrets kept.
func UnmarshalInputs(s *structpb.Struct) (resource.PropertyMap, error) {
	return plugin.UnmarshalProperties(s, plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true})
}

// ResourceType is the type token of a URN, urn:pulumi:stack::project::[parent types$]type::name.
func ResourceType(urn string) string {
	parts := strings.Split(urn, "::")
	if len(parts) < 4 {
		return ""
	}
	t := parts[2]
	if i := strings.LastIndex(t, "$"); i >= 0 {
		t = t[i+1:]
	}
	return t
}

// InputChanged reports whether input k differs between olds and news for Diff. An unknown new value
// counts as a change (it is not known yet to be equal), and an input that is absent on one side and
// empty (null, [] or {}) on the other is none, as the SDKs send an unset input either way.
func InputChanged(olds, news resource.PropertyMap, k string) bool {
	o, hasOld := olds[resource.PropertyKey(k)]
	n, hasNew := news[resource.PropertyKey(k)]
	switch {
	case hasNew && n.ContainsUnknowns():
		return true
	case hasOld != hasNew:
		return !isEmpty(o) || !isEmpty(n)
	case hasOld && hasNew:
		return !o.DeepEquals(n)
	}
	return false
}

// DiffResult is the answer of Diff: diffs are the changed inputs (sorted here, for a stable
// preview), replaces those of them that replace the resource, detailed the change of each.
func DiffResult(diffs, replaces []string, detailed map[string]*pulumirpc.PropertyDiff) *pulumirpc.DiffResponse {
	sort.Strings(diffs)
	changes := pulumirpc.DiffResponse_DIFF_NONE
	if len(diffs) > 0 {
		changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	return &pulumirpc.DiffResponse{
		Changes: changes, Diffs: diffs, Replaces: replaces, DetailedDiff: detailed, HasDetailedDiff: true,
	}
}

func isEmpty(v resource.PropertyValue) bool {
	return v.IsNull() || (v.IsArray() && len(v.ArrayValue()) == 0) || (v.IsObject() && len(v.ObjectValue()) == 0)
}

// String is m[k] when it is a string, else "".
func String(m resource.PropertyMap, k string) string {
	if v, ok := m[resource.PropertyKey(k)]; ok && v.IsString() {
		return v.StringValue()
	}
	return ""
}

// Number is m[k] when it is a number, else def.
func Number(m resource.PropertyMap, k string, def float64) float64 {
	if v, ok := m[resource.PropertyKey(k)]; ok && v.IsNumber() {
		return v.NumberValue()
	}
	return def
}

// Bool is m[k] when it is a bool, else false.
func Bool(m resource.PropertyMap, k string) bool {
	if v, ok := m[resource.PropertyKey(k)]; ok && v.IsBool() {
		return v.BoolValue()
	}
	return false
}

// Strings are the string elements of the array m[k] (others skipped); nil when m[k] is no array.
func Strings(m resource.PropertyMap, k string) []string {
	var out []string
	if v, ok := m[resource.PropertyKey(k)]; ok && v.IsArray() {
		for _, e := range v.ArrayValue() {
			if e.IsString() {
				out = append(out, e.StringValue())
			}
		}
	}
	return out
}
