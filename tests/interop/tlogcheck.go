// tlogcheck: an independent check of what ledgertail signs, built on Go's
// golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog (Debian's
// golang-golang-x-mod-dev), not on any ledgertail code. Build with
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o tlogcheck tlogcheck.go
//
// Commands (exit 0: verified; 1: refused, with the reason on stderr):
//
//	tlogcheck inclusion VKEY PROOF_FILE
//	    a c2sp.org/tlog-proof@v1 file: note.Open on its checkpoint, the leaf
//	    from the "hash" of the event in its extra line, tlog.CheckRecord.
//	tlogcheck consistency VKEY OLD_CHECKPOINT_FILE PROOF_FILE
//	    an add-checkpoint body from `ledgertail prove --consistency`:
//	    note.Open on both checkpoints, tlog.CheckTree.
//	tlogcheck witness ADDR LOG_VKEY NAME SEED_HEX
//	    a tlog-witness speaking add-checkpoint on ADDR, cosigning with an
//	    Ed25519 cosignature/v1 key (prints its verifier key on stdout);
//	    over TLS when TLOGCHECK_TLS_CERT and TLOGCHECK_TLS_KEY name PEM
//	    files, refusing everything when TLOGCHECK_REFUSE is set.
package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
	text   string
}

func openCheckpoint(msg []byte, vkey string) (checkpoint, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return checkpoint{}, fmt.Errorf("verifier key: %v", err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return checkpoint{}, fmt.Errorf("note.Open: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) < 3 {
		return checkpoint{}, errors.New("checkpoint has fewer than 3 lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return checkpoint{}, fmt.Errorf("size: %v", err)
	}
	root, err := parseHash(lines[2])
	if err != nil {
		return checkpoint{}, err
	}
	if lines[0] != v.Name() {
		return checkpoint{}, fmt.Errorf("origin %q is not the key's name %q", lines[0], v.Name())
	}
	return checkpoint{lines[0], size, root, n.Text}, nil
}

func parseHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("%q is not a base64 hash", s)
	}
	copy(h[:], b)
	return h, nil
}

// splitBody cuts "header lines, hash lines, blank line, checkpoint".
func splitBody(data []byte) (header []string, hashes []tlog.Hash, rest []byte, err error) {
	i := bytes.Index(data, []byte("\n\n"))
	if i < 0 {
		return nil, nil, nil, errors.New("no blank line before the checkpoint")
	}
	for _, l := range strings.Split(string(data[:i]), "\n") {
		if strings.HasPrefix(l, "c2sp.org/") || strings.Contains(l, " ") {
			header = append(header, l)
			continue
		}
		h, err := parseHash(l)
		if err != nil {
			return nil, nil, nil, err
		}
		hashes = append(hashes, h)
	}
	return header, hashes, data[i+2:], nil
}

func inclusion(vkey, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	header, hashes, rest, err := splitBody(data)
	if err != nil {
		return err
	}
	if len(header) < 2 || header[0] != "c2sp.org/tlog-proof@v1" {
		return errors.New("not a c2sp.org/tlog-proof@v1 file")
	}
	var extra []byte
	var index int64 = -1
	for _, l := range header[1:] {
		switch {
		case strings.HasPrefix(l, "extra "):
			extra, err = base64.StdEncoding.DecodeString(strings.TrimPrefix(l, "extra "))
			if err != nil {
				return fmt.Errorf("extra: %v", err)
			}
		case strings.HasPrefix(l, "index "):
			index, err = strconv.ParseInt(strings.TrimPrefix(l, "index "), 10, 64)
			if err != nil {
				return fmt.Errorf("index: %v", err)
			}
		}
	}
	c, err := openCheckpoint(rest, vkey)
	if err != nil {
		return err
	}
	var event struct {
		Hash string `json:"hash"`
	}
	if err := json.Unmarshal(extra, &event); err != nil {
		return fmt.Errorf("the event in extra: %v", err)
	}
	raw, err := hex.DecodeString(event.Hash)
	if err != nil || len(raw) != 32 {
		return fmt.Errorf("the event's hash %q is not 64 hex digits", event.Hash)
	}
	leaf := tlog.RecordHash(raw)
	if err := tlog.CheckRecord(tlog.RecordProof(hashes), c.size, c.root, index, leaf); err != nil {
		return fmt.Errorf("tlog.CheckRecord(index %d, size %d): %v", index, c.size, err)
	}
	fmt.Printf("inclusion OK: index %d of %s size %d\n", index, c.origin, c.size)
	return nil
}

func consistency(vkey, oldFile, file string) error {
	oldData, err := os.ReadFile(oldFile)
	if err != nil {
		return err
	}
	old, err := openCheckpoint(oldData, vkey)
	if err != nil {
		return fmt.Errorf("old checkpoint: %v", err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	header, hashes, rest, err := splitBody(data)
	if err != nil {
		return err
	}
	if len(header) != 1 || header[0] != "old "+strconv.FormatInt(old.size, 10) {
		return fmt.Errorf("the proof's %q is not from the old checkpoint's size %d", header, old.size)
	}
	c, err := openCheckpoint(rest, vkey)
	if err != nil {
		return err
	}
	if err := tlog.CheckTree(tlog.TreeProof(hashes), c.size, c.root, old.size, old.root); err != nil {
		return fmt.Errorf("tlog.CheckTree(%d -> %d): %v", old.size, c.size, err)
	}
	fmt.Printf("consistency OK: %s %d -> %d\n", c.origin, old.size, c.size)
	return nil
}

// The witness: one log, the latest cosigned checkpoint in memory.
type witness struct {
	mu     sync.Mutex
	logKey string
	name   string
	key    ed25519.PrivateKey
	keyID  uint32
	size   int64
	root   tlog.Hash
	refuse bool
}

func (w *witness) cosign(text string) string {
	ts := uint64(time.Now().Unix())
	msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", ts, text)
	sig := ed25519.Sign(w.key, []byte(msg))
	raw := make([]byte, 4+8+64)
	binary.BigEndian.PutUint32(raw, w.keyID)
	binary.BigEndian.PutUint64(raw[4:], ts)
	copy(raw[12:], sig)
	return "\u2014 " + w.name + " " + base64.StdEncoding.EncodeToString(raw) + "\n"
}

func (w *witness) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/add-checkpoint") {
		http.Error(rw, "not found", http.StatusNotFound)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	header, hashes, rest, err := splitBody(body)
	if err != nil || len(header) != 1 || !strings.HasPrefix(header[0], "old ") {
		http.Error(rw, "bad request", http.StatusBadRequest)
		return
	}
	old, err := strconv.ParseInt(strings.TrimPrefix(header[0], "old "), 10, 64)
	if err != nil {
		http.Error(rw, "bad old size", http.StatusBadRequest)
		return
	}
	c, err := openCheckpoint(rest, w.logKey)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusForbidden)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.refuse {
		http.Error(rw, "refusing everything", http.StatusForbidden)
		return
	}
	if old > c.size {
		http.Error(rw, "old size beyond the checkpoint", http.StatusBadRequest)
		return
	}
	if old != w.size {
		rw.Header().Set("Content-Type", "text/x.tlog.size")
		rw.WriteHeader(http.StatusConflict)
		fmt.Fprintf(rw, "%d\n", w.size)
		return
	}
	if old == c.size && c.root != w.root {
		http.Error(rw, "same size, other root", http.StatusConflict)
		return
	}
	if old > 0 {
		if err := tlog.CheckTree(tlog.TreeProof(hashes), c.size, c.root, old, w.root); err != nil {
			http.Error(rw, err.Error(), http.StatusUnprocessableEntity)
			return
		}
	} else if len(hashes) != 0 {
		http.Error(rw, "a proof from 0 is empty", http.StatusUnprocessableEntity)
		return
	}
	w.size, w.root = c.size, c.root
	io.WriteString(rw, w.cosign(c.text))
}

func runWitness(addr, logKey, name, seedHex string) error {
	seed, err := hex.DecodeString(seedHex)
	if err != nil || len(seed) != 32 {
		return errors.New("SEED_HEX must be 64 hex digits")
	}
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)
	h := sha256.Sum256(append(append([]byte(name+"\n"), 0x04), pub...))
	w := &witness{logKey: logKey, name: name, key: key, keyID: binary.BigEndian.Uint32(h[:4])}
	w.refuse = os.Getenv("TLOGCHECK_REFUSE") != ""
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "%s+%08x+%s\n%s\n", name, w.keyID, base64.StdEncoding.EncodeToString(append([]byte{0x04}, pub...)), ln.Addr())
	out.Flush()
	if cert := os.Getenv("TLOGCHECK_TLS_CERT"); cert != "" {
		return http.ServeTLS(ln, w, cert, os.Getenv("TLOGCHECK_TLS_KEY"))
	}
	return http.Serve(ln, w)
}

func main() {
	args := os.Args[1:]
	var err error
	switch {
	case len(args) == 3 && args[0] == "inclusion":
		err = inclusion(args[1], args[2])
	case len(args) == 4 && args[0] == "consistency":
		err = consistency(args[1], args[2], args[3])
	case len(args) == 5 && args[0] == "witness":
		err = runWitness(args[1], args[2], args[3], args[4])
	default:
		err = errors.New("usage: tlogcheck inclusion VKEY FILE | consistency VKEY OLD FILE | witness ADDR LOG_VKEY NAME SEED_HEX")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlogcheck:", err)
		os.Exit(1)
	}
}
