package main

import (
	"context"
	"log/slog"

	"github.com/dvrhotline/hotline/server"
)

// demoDevices are registered in a development database (serve --dev) so
// that the first steps serve prints find something.
var demoDevices = []server.NewDevice{
	{Serial: "JZ6OES#2017-08-01#3#DVR1101134C08011", Model: "WBXHD082S2T", OwnerContact: "jane@example.com", Firmware: "V4.0.1"},
	{Serial: "K7P2QA#2019-03-14#1#DVR2203140A00042", Model: "WBXHD041S1T", OwnerContact: "+44 20 7946 0958", Firmware: "V4.1.0"},
	{Serial: "M3X9TB#2021-11-30#12#DVR3311300B01234", Model: "WBXHD162S4T", OwnerContact: "ops@shop.example", Firmware: "V5.0.2"},
}

// seedDemoDevices registers the demo devices that are not registered yet,
// as the provisioner "dev-seed" (audited like any registration).
func seedDemoDevices(ctx context.Context, svc *server.Service, log *slog.Logger) {
	a := server.Actor{Subject: "dev-seed", Role: server.RoleProvisioner, ClientAddr: "serve --dev"}
	for _, d := range demoDevices {
		if _, err := svc.RegisterDevice(ctx, a, d); err != nil && server.ErrorCode(err) != server.EConflict {
			log.Warn("demo device not registered", "serial", d.Serial, "err", err)
		}
	}
}
