package main

import "flag"

// mailFlags are the DVR's SMTP settings as recovery-code takes them when
// it sends the e-mail itself (without --stdout). The password is never a
// flag value, which other processes would see in ps: it is read from
// --smtp-password-file, "-" for standard input.
type mailFlags struct {
	server, ssl, user, passwordFile, from, ca, model string
}

func (m *mailFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.server, "smtp-server", "", "recovery-code: the SMTP server as host:port")
	fs.StringVar(&m.ssl, "smtp-ssl", "", "recovery-code: the SSL setting: tls (implicit, port 465), starttls (port 587) or none (a local relay only)")
	fs.StringVar(&m.user, "smtp-user", "", "recovery-code: the SMTP user name (empty: no login)")
	fs.StringVar(&m.passwordFile, "smtp-password-file", "", "recovery-code: the file holding the SMTP password; - reads standard input")
	fs.StringVar(&m.from, "smtp-from", "", "recovery-code: the sender address (default: the user name, if it is an address)")
	fs.StringVar(&m.ca, "smtp-ca", "", "recovery-code: PEM file of the CAs that sign the SMTP server's certificate (default: the system's)")
	fs.StringVar(&m.model, "model", "", "recovery-code: the DVR's model name, named in the e-mail")
}
