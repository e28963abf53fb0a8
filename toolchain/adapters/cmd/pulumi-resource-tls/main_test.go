// Copyright 2026 metrics-aggregation authors.

package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"regexp"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/structpb"

	"metrics-aggregation/toolchain/adapters/internal/provider"
)

const certURN = "urn:pulumi:s::p::tls:index/selfSignedCert:SelfSignedCert::ca"

// marshalTimeRE: time.Time.MarshalText's RFC 3339 with a fraction of 1-9 digits without trailing zeros
// (none at all for a whole second) and a numeric offset.
var marshalTimeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?([+-]\d\d:\d\d|Z)$`)

func inZone(t *testing.T, loc *time.Location) {
	t.Helper()
	saved := time.Local
	time.Local = loc
	t.Cleanup(func() { time.Local = saved })
}

func selfSigned(t *testing.T, early float64) resource.PropertyMap {
	t.Helper()
	_, key, err := createPrivateKey(resource.PropertyMap{"algorithm": resource.NewStringProperty("ED25519")})
	if err != nil {
		t.Fatal(err)
	}
	in := resource.PropertyMap{
		"privateKeyPem":       key["privateKeyPem"],
		"subject":             resource.NewObjectProperty(resource.PropertyMap{"commonName": resource.NewStringProperty("ca")}),
		"allowedUses":         resource.NewArrayProperty([]resource.PropertyValue{resource.NewStringProperty("cert_signing")}),
		"validityPeriodHours": resource.NewNumberProperty(8760),
		"earlyRenewalHours":   resource.NewNumberProperty(early),
		"isCaCertificate":     resource.NewBoolProperty(true),
	}
	_, outs, err := createCert(tSelfSignedCert, in)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range in {
		outs[k] = v
	}
	return outs
}

func wire(t *testing.T, m resource.PropertyMap) *structpb.Struct {
	t.Helper()
	s, err := plugin.MarshalProperties(m, plugin.MarshalOptions{KeepUnknowns: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// terraform-provider-tls internal/provider/common_cert.go createCertificate: NotBefore = time.Now(),
// both times written with MarshalText, so in the provider's local zone with nanoseconds.
func TestValidityTimesAreMarshalTextInTheLocalZone(t *testing.T) {
	inZone(t, time.FixedZone("VET", -4*3600))
	before := time.Now()
	outs := selfSigned(t, 0)
	for _, k := range []resource.PropertyKey{"validityStartTime", "validityEndTime"} {
		text := outs[k].StringValue()
		if !marshalTimeRE.MatchString(text) || text[len(text)-6:] != "-04:00" {
			t.Fatalf("%s = %q: not MarshalText in the -04:00 local zone", k, text)
		}
		at, err := time.Parse(time.RFC3339Nano, text)
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := at.MarshalText(); string(again) != text {
			t.Fatalf("%s = %q does not round-trip through MarshalText (%q)", k, text, again)
		}
	}
	start, _ := time.Parse(time.RFC3339Nano, outs["validityStartTime"].StringValue())
	end, _ := time.Parse(time.RFC3339Nano, outs["validityEndTime"].StringValue())
	if start.Before(before) || start.Sub(before) > time.Minute || end.Sub(start) != 8760*time.Hour {
		t.Fatalf("start %v end %v: not now and now + validityPeriodHours", start, end)
	}
	blk, _ := pem.Decode([]byte(outs["certPem"].StringValue()))
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.NotAfter.Equal(end.Truncate(time.Second)) {
		t.Fatalf("certificate NotAfter %v, validityEndTime %v", cert.NotAfter, end)
	}
}

func diff(t *testing.T, olds, news resource.PropertyMap) *pulumirpc.DiffResponse {
	t.Helper()
	p := &tlsProvider{provider.Base{Name: "tls"}}
	resp, err := p.Diff(context.Background(), &pulumirpc.DiffRequest{Urn: certURN, Olds: wire(t, olds), News: wire(t, news)})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func inputsOf(state resource.PropertyMap) resource.PropertyMap {
	news := resource.PropertyMap{}
	for _, k := range inputKeys[tSelfSignedCert] {
		if v, ok := state[resource.PropertyKey(k)]; ok {
			news[resource.PropertyKey(k)] = v
		}
	}
	return news
}

// terraform-provider-tls resource_self_signed_cert.go: early_renewal_hours has no RequiresReplace, so
// a change is an update; every other input replaces.
func TestEarlyRenewalHoursIsAnUpdateAndOtherInputsReplace(t *testing.T) {
	state := selfSigned(t, 24)
	news := inputsOf(state)
	news["earlyRenewalHours"] = resource.NewNumberProperty(48)
	resp := diff(t, state, news)
	if resp.GetChanges() != pulumirpc.DiffResponse_DIFF_SOME || len(resp.GetReplaces()) != 0 ||
		len(resp.GetDiffs()) != 1 || resp.GetDiffs()[0] != "earlyRenewalHours" ||
		resp.GetDetailedDiff()["earlyRenewalHours"].GetKind() != pulumirpc.PropertyDiff_UPDATE {
		t.Fatalf("earlyRenewalHours 24 -> 48: %v", resp)
	}

	news = inputsOf(state)
	news["validityPeriodHours"] = resource.NewNumberProperty(100)
	resp = diff(t, state, news)
	if len(resp.GetReplaces()) != 1 || resp.GetReplaces()[0] != "validityPeriodHours" ||
		resp.GetDetailedDiff()["validityPeriodHours"].GetKind() != pulumirpc.PropertyDiff_UPDATE_REPLACE {
		t.Fatalf("validityPeriodHours changed: %v", resp)
	}

	if resp := diff(t, state, inputsOf(state)); resp.GetChanges() != pulumirpc.DiffResponse_DIFF_NONE {
		t.Fatalf("nothing changed: %v", resp)
	}
}

// terraform-provider-tls common_cert.go modifyPlanIfCertificateReadyForRenewal: the planned (new)
// early_renewal_hours against the state's validity_end_time; inside the window, ready_for_renewal
// requires a replacement.
func TestReadyForRenewalReplacesWithThePlannedEarlyRenewalHours(t *testing.T) {
	state := selfSigned(t, 0) // ends 8760 h from now
	news := inputsOf(state)
	news["earlyRenewalHours"] = resource.NewNumberProperty(8761)
	resp := diff(t, state, news)
	if len(resp.GetReplaces()) != 1 || resp.GetReplaces()[0] != "readyForRenewal" {
		t.Fatalf("a new earlyRenewalHours that reaches now must replace: %v", resp)
	}

	// An end in the past, in another zone's notation with a fraction, is ready with unchanged inputs.
	state["validityEndTime"] = resource.NewStringProperty(time.Now().Add(-time.Hour).In(time.FixedZone("", 5*3600+1800)).Format(time.RFC3339Nano))
	resp = diff(t, state, inputsOf(state))
	if len(resp.GetReplaces()) != 1 || resp.GetReplaces()[0] != "readyForRenewal" {
		t.Fatalf("an expired certificate must be replaced: %v", resp)
	}

	state["validityEndTime"] = resource.NewStringProperty("next tuesday")
	p := &tlsProvider{provider.Base{Name: "tls"}}
	if _, err := p.Diff(context.Background(), &pulumirpc.DiffRequest{Urn: certURN, Olds: wire(t, state), News: wire(t, inputsOf(state))}); err == nil {
		t.Fatal("an unparseable validityEndTime must be an error, as upstream's")
	}
}

// terraform-provider-tls internal/provider/common.go updatedUsingPlan: Update writes the new inputs over
// the state; the certificate and its times stay.
func TestUpdateKeepsTheCertificate(t *testing.T) {
	state := selfSigned(t, 24)
	news := inputsOf(state)
	news["earlyRenewalHours"] = resource.NewNumberProperty(48)
	p := &tlsProvider{provider.Base{Name: "tls"}}
	for _, preview := range []bool{true, false} {
		resp, err := p.Update(context.Background(), &pulumirpc.UpdateRequest{
			Urn: certURN, Olds: wire(t, state), News: wire(t, news), Preview: preview,
		})
		if err != nil {
			t.Fatal(err)
		}
		outs, err := provider.Unmarshal(resp.GetProperties(), false)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []resource.PropertyKey{"certPem", "validityEndTime", "validityStartTime"} {
			if !outs[k].DeepEquals(state[k]) {
				t.Fatalf("preview=%v: %s changed by an update", preview, k)
			}
		}
		if outs["earlyRenewalHours"].NumberValue() != 48 {
			t.Fatalf("preview=%v: earlyRenewalHours not updated: %v", preview, outs["earlyRenewalHours"])
		}
	}
	resp, err := p.Configure(context.Background(), &pulumirpc.ConfigureRequest{})
	if err != nil || !resp.GetSupportsPreview() {
		t.Fatalf("Configure must report provider-side previews: %v %v", resp, err)
	}
}
