package provider

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"

	"metrics-aggregation/toolchain/adapters/internal/serve"
)

func configured(t *testing.T, acceptSecrets bool) *Base {
	t.Helper()
	b := &Base{Name: "demo", Secrets: map[string]bool{"key": true}}
	if _, err := b.Configure(context.Background(), &pulumirpc.ConfigureRequest{AcceptSecrets: acceptSecrets}); err != nil {
		t.Fatal(err)
	}
	return b
}

// wire decodes what Marshal sent as the engine does, secrets kept.
func wire(t *testing.T, b *Base, m resource.PropertyMap) resource.PropertyMap {
	t.Helper()
	s, err := b.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out, err := plugin.UnmarshalProperties(s, plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMarshalWrapsTheSecretOutputsOnlyWhenTheEngineAcceptsSecrets(t *testing.T) {
	in := resource.PropertyMap{
		"key":   resource.NewStringProperty("PEM"),
		"plain": resource.NewStringProperty("cert"),
		"later": resource.MakeComputed(resource.NewStringProperty("")),
	}
	got := wire(t, configured(t, true), in)
	if !got["key"].IsSecret() || got["key"].SecretValue().Element.StringValue() != "PEM" {
		t.Errorf("key = %v, want secret PEM", got["key"])
	}
	if got["plain"].IsSecret() || got["plain"].StringValue() != "cert" {
		t.Errorf("plain = %v, want plain cert", got["plain"])
	}
	if !got["later"].ContainsUnknowns() {
		t.Errorf("later = %v, want the unknown kept", got["later"])
	}

	got = wire(t, configured(t, false), in)
	if got["key"].IsSecret() || got["key"].StringValue() != "PEM" {
		t.Errorf("without acceptSecrets key = %v, want plain PEM", got["key"])
	}
}

func TestMarshalLeavesANullSecretNull(t *testing.T) {
	got := wire(t, configured(t, true), resource.PropertyMap{"key": resource.NewNullProperty()})
	if got["key"].IsSecret() {
		t.Errorf("key = %v, want null, not a secret null", got["key"])
	}
}

func TestUnmarshalUnwrapsSecretsAndSkipsNulls(t *testing.T) {
	s, err := plugin.MarshalProperties(resource.PropertyMap{
		"key":  resource.MakeSecret(resource.NewStringProperty("PEM")),
		"none": resource.NewNullProperty(),
	}, plugin.MarshalOptions{KeepSecrets: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unmarshal(s, false)
	if err != nil {
		t.Fatal(err)
	}
	if got["key"].IsSecret() || got["key"].StringValue() != "PEM" {
		t.Errorf("key = %v, want the plain value", got["key"])
	}
	if _, ok := got["none"]; ok {
		t.Errorf("null property kept: %v", got)
	}
	inputs, err := UnmarshalInputs(s)
	if err != nil {
		t.Fatal(err)
	}
	if !inputs["key"].IsSecret() {
		t.Errorf("UnmarshalInputs key = %v, want the secret kept", inputs["key"])
	}
}

func TestInputChanged(t *testing.T) {
	str := resource.NewStringProperty
	empty := resource.NewArrayProperty(nil)
	cases := []struct {
		name       string
		olds, news resource.PropertyMap
		want       bool
	}{
		{"equal", resource.PropertyMap{"k": str("a")}, resource.PropertyMap{"k": str("a")}, false},
		{"different", resource.PropertyMap{"k": str("a")}, resource.PropertyMap{"k": str("b")}, true},
		{"added", resource.PropertyMap{}, resource.PropertyMap{"k": str("a")}, true},
		{"removed", resource.PropertyMap{"k": str("a")}, resource.PropertyMap{}, true},
		{"absent vs empty", resource.PropertyMap{}, resource.PropertyMap{"k": empty}, false},
		{"empty vs absent", resource.PropertyMap{"k": resource.NewObjectProperty(resource.PropertyMap{})}, resource.PropertyMap{}, false},
		{"absent on both sides", resource.PropertyMap{}, resource.PropertyMap{}, false},
		{"unknown", resource.PropertyMap{"k": str("a")}, resource.PropertyMap{"k": resource.MakeComputed(str(""))}, true},
	}
	for _, c := range cases {
		if got := InputChanged(c.olds, c.news, "k"); got != c.want {
			t.Errorf("%s: InputChanged = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestResourceTypeIgnoresTheParentTypes(t *testing.T) {
	cases := map[string]string{
		"urn:pulumi:dev::proj::tls:index/privateKey:PrivateKey::ca":                    "tls:index/privateKey:PrivateKey",
		"urn:pulumi:dev::proj::my:pki:Pki$tls:index/selfSignedCert:SelfSignedCert::ca": "tls:index/selfSignedCert:SelfSignedCert",
		"urn:pulumi:dev::proj::a:b:C$my:pki:Pki$command:remote:Command::restart":       "command:remote:Command",
		"not a urn": "",
	}
	for urn, want := range cases {
		if got := ResourceType(urn); got != want {
			t.Errorf("ResourceType(%q) = %q, want %q", urn, got, want)
		}
	}
}

func TestSchemaAndPluginInfoCarryTheNameAndStampedVersion(t *testing.T) {
	b := &Base{Name: "tls"}
	schema, err := b.GetSchema(context.Background(), &pulumirpc.GetSchemaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]string
	if err := json.Unmarshal([]byte(schema.GetSchema()), &doc); err != nil {
		t.Fatalf("schema %q: %v", schema.GetSchema(), err)
	}
	if doc["name"] != "tls" || doc["version"] != serve.Version {
		t.Errorf("schema = %v, want name tls and version %s", doc, serve.Version)
	}
	info, err := b.GetPluginInfo(context.Background(), nil)
	if err != nil || info.GetVersion() != serve.Version {
		t.Errorf("GetPluginInfo = %v, %v; want version %s", info, err, serve.Version)
	}
	if _, err := b.Invoke(context.Background(), &pulumirpc.InvokeRequest{Tok: "tls:index/getPublicKey:getPublicKey"}); err == nil ||
		err.Error() != "tls: function tls:index/getPublicKey:getPublicKey is not supported by this provider" {
		t.Errorf("Invoke error = %v", err)
	}
}

func TestTypedReads(t *testing.T) {
	m := resource.PropertyMap{
		"s": resource.NewStringProperty("x"),
		"n": resource.NewNumberProperty(3),
		"b": resource.NewBoolProperty(true),
		"a": resource.NewArrayProperty([]resource.PropertyValue{
			resource.NewStringProperty("p"), resource.NewNumberProperty(1), resource.NewStringProperty("q"),
		}),
	}
	if String(m, "s") != "x" || String(m, "n") != "" || String(m, "missing") != "" {
		t.Error("String")
	}
	if Number(m, "n", 7) != 3 || Number(m, "s", 7) != 7 || Number(m, "missing", 22) != 22 {
		t.Error("Number")
	}
	if !Bool(m, "b") || Bool(m, "s") || Bool(m, "missing") {
		t.Error("Bool")
	}
	if got := Strings(m, "a"); len(got) != 2 || got[0] != "p" || got[1] != "q" {
		t.Errorf("Strings = %v", got)
	}
	if Strings(m, "s") != nil {
		t.Error("Strings of a non-array")
	}
}

func TestCreateFromEchoesTheInputsInAPreviewAndOtherwiseCreates(t *testing.T) {
	b := configured(t, true)
	props, err := plugin.MarshalProperties(resource.PropertyMap{
		"alg":   resource.NewStringProperty("RSA"),
		"later": resource.MakeComputed(resource.NewStringProperty("")),
	}, plugin.MarshalOptions{KeepUnknowns: true})
	if err != nil {
		t.Fatal(err)
	}
	created := 0
	create := func(in resource.PropertyMap) (string, resource.PropertyMap, error) {
		created++
		return "id-1", resource.PropertyMap{"alg": in["alg"], "key": resource.NewStringProperty("PEM")}, nil
	}

	resp, err := b.CreateFrom(&pulumirpc.CreateRequest{Properties: props, Preview: true}, create)
	if err != nil || created != 0 || resp.GetId() != "" {
		t.Fatalf("preview: %v, %v, created %d times; want no ID and no create", resp, err, created)
	}
	echo, _ := plugin.UnmarshalProperties(resp.GetProperties(), plugin.MarshalOptions{KeepUnknowns: true})
	if echo["alg"].StringValue() != "RSA" || !echo["later"].ContainsUnknowns() {
		t.Errorf("preview outputs = %v, want the inputs", echo)
	}

	resp, err = b.CreateFrom(&pulumirpc.CreateRequest{Properties: props}, create)
	if err != nil || created != 1 || resp.GetId() != "id-1" {
		t.Fatalf("create: %v, %v, created %d times", resp, err, created)
	}
	outs, _ := plugin.UnmarshalProperties(resp.GetProperties(), plugin.MarshalOptions{KeepSecrets: true})
	if !outs["key"].IsSecret() || outs["alg"].StringValue() != "RSA" {
		t.Errorf("outputs = %v, want alg and the secret key", outs)
	}

	failing := func(resource.PropertyMap) (string, resource.PropertyMap, error) { return "", nil, errors.New("boom") }
	if _, err := b.CreateFrom(&pulumirpc.CreateRequest{Properties: props}, failing); err == nil || err.Error() != "boom" {
		t.Errorf("create error = %v, want boom", err)
	}
}

func TestUpdateFromEchoesTheNewInputsInAPreviewAndOtherwiseUpdates(t *testing.T) {
	b := configured(t, false)
	olds, _ := plugin.MarshalProperties(resource.PropertyMap{"cmd": resource.NewStringProperty("old")}, plugin.MarshalOptions{})
	news, _ := plugin.MarshalProperties(resource.PropertyMap{"cmd": resource.NewStringProperty("new")}, plugin.MarshalOptions{})
	var seen []string
	update := func(o, n resource.PropertyMap) (resource.PropertyMap, error) {
		seen = append(seen, o["cmd"].StringValue()+">"+n["cmd"].StringValue())
		return resource.PropertyMap{"cmd": n["cmd"], "stdout": resource.NewStringProperty("ran")}, nil
	}

	resp, err := b.UpdateFrom(&pulumirpc.UpdateRequest{Olds: olds, News: news, Preview: true}, update)
	if err != nil || len(seen) != 0 {
		t.Fatalf("preview: %v, %v, updates %v; want none", resp, err, seen)
	}
	if _, has := resp.GetProperties().GetFields()["stdout"]; has {
		t.Errorf("preview outputs = %v, want the new inputs only", resp.GetProperties())
	}

	resp, err = b.UpdateFrom(&pulumirpc.UpdateRequest{Olds: olds, News: news}, update)
	if err != nil || len(seen) != 1 || seen[0] != "old>new" {
		t.Fatalf("update: %v, %v, updates %v", resp, err, seen)
	}
	if resp.GetProperties().GetFields()["stdout"].GetStringValue() != "ran" {
		t.Errorf("outputs = %v, want stdout", resp.GetProperties())
	}
}

func TestDiffResultSortsTheChangesAndSaysWhetherThereAreAny(t *testing.T) {
	none := DiffResult(nil, nil, map[string]*pulumirpc.PropertyDiff{})
	if none.GetChanges() != pulumirpc.DiffResponse_DIFF_NONE || !none.GetHasDetailedDiff() {
		t.Errorf("no diffs: %v", none)
	}
	some := DiffResult([]string{"update", "create"}, []string{"triggers"}, nil)
	if some.GetChanges() != pulumirpc.DiffResponse_DIFF_SOME ||
		strings.Join(some.GetDiffs(), ",") != "create,update" || strings.Join(some.GetReplaces(), ",") != "triggers" {
		t.Errorf("diffs: %v", some)
	}
}
