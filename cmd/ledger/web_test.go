package main

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

func TestWebAuth(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	const pem = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh\nkd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ\n0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg\ncKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc\nmwIDAQAB\n-----END PUBLIC KEY-----\n"
	pk := "pk_test_Y2xlcmsuZXhhbXBsZS50ZXN0JA=="

	// Neither key, not dev: nobody can sign in.
	s, d, err := webAuth(log, config{Addr: "localhost:4321"}, "127.0.0.1:4321", false)
	if s != nil || d != nil || err != nil {
		t.Errorf("no keys: %v %v %v", s, d, err)
	}
	// Neither key, dev on loopback: the dev sign-in and its verifier.
	s, d, err = webAuth(log, config{Addr: "localhost:0"}, "127.0.0.1:40001", true)
	if s == nil || d == nil || err != nil {
		t.Fatalf("dev: %v %v %v", s, d, err)
	}
	if got := strings.Join(s.AuthorizedParties(), " "); !strings.Contains(got, "http://localhost:40001") {
		t.Errorf("dev parties %s", got)
	}
	// Dev listening on every interface: refused.
	if _, _, err := webAuth(log, config{Addr: "0.0.0.0:4321"}, "[::]:4321", true); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("dev on 0.0.0.0: %v", err)
	}
	// Clerk keys: the Clerk verifier, never the dev sign-in, even in dev.
	cfg := config{Addr: "localhost:4321", ClerkJWTKey: pem, PublishableKey: pk}
	s, d, err = webAuth(log, cfg, "127.0.0.1:4321", true)
	if s == nil || d != nil || err != nil {
		t.Errorf("Clerk keys in dev: %v %v %v", s, d, err)
	}
	// Behind a proxy: the configured origins win; an unspecified host has none.
	cfg.AuthorizedParties = []string{"https://ledger.example.com"}
	if s, _, err = webAuth(log, cfg, "[::]:4321", false); err != nil || s.AuthorizedParties()[0] != "https://ledger.example.com" {
		t.Errorf("authorized parties: %v %v", s, err)
	}
	cfg.AuthorizedParties, cfg.Addr = nil, ":4321"
	if _, _, err = webAuth(log, cfg, "[::]:4321", false); domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), "CLERK_AUTHORIZED_PARTIES") {
		t.Errorf("unspecified host without CLERK_AUTHORIZED_PARTIES: %v", err)
	}
	cfg.PublishableKey = "pk_test_bad"
	if _, _, err = webAuth(log, cfg, "127.0.0.1:4321", false); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("bad publishable key: %v", err)
	}
}
