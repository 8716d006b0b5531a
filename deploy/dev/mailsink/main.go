// Command mailsink is the development SMTP server `make demo` sends to: it
// listens on a loopback address (plaintext, which hotline-server allows to
// loopback only), accepts every message, and writes each one as it
// arrived to a numbered .eml file in a folder. It is not for production.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/emersion/go-smtp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to listen on")
	dir := flag.String("dir", ".", "folder for the received messages (NNN.eml)")
	flag.Parse()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if ip := l.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		log.Fatalf("mailsink listens on loopback only, not %s", ip)
	}
	s := smtp.NewServer(&sink{dir: *dir})
	s.Domain = "mailsink.localhost"
	fmt.Println(l.Addr().String()) // the address, for scripts
	log.Fatal(s.Serve(l))
}

type sink struct {
	dir string
	mu  sync.Mutex
	n   int
}

func (k *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{k: k}, nil }

type session struct{ k *sink }

func (s *session) Mail(string, *smtp.MailOptions) error { return nil }
func (s *session) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *session) Reset()                               {}
func (s *session) Logout() error                        { return nil }

func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.k.mu.Lock()
	s.k.n++
	name := filepath.Join(s.k.dir, fmt.Sprintf("%03d.eml", s.k.n))
	s.k.mu.Unlock()
	return os.WriteFile(name, b, 0o600)
}
