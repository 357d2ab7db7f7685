package scimfilter

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// SCIM error types (RFC 7644 §3.12) that this package's errors carry.
const (
	// InvalidFilter is the scimType of a filter that Parse rejects.
	InvalidFilter = "invalidFilter"
	// InvalidPath is the scimType of a path that ParsePath rejects.
	InvalidPath = "invalidPath"
)

// Error reports why a filter or path was rejected. It exists so that the
// server can map every parse failure to one SCIM 400 response without
// inspecting messages; Reason never quotes the input, so the error is safe to
// return to the client and to log.
type Error struct {
	// ScimType is InvalidFilter for Parse and InvalidPath for ParsePath.
	ScimType string
	// Offset is the byte offset in the input where parsing stopped.
	Offset int
	// Reason says what was expected.
	Reason string
}

// Error implements error.
func (e *Error) Error() string {
	what := "filter"
	if e.ScimType == InvalidPath {
		what = "path"
	}
	return fmt.Sprintf("invalid %s at offset %d: %s", what, e.Offset, e.Reason)
}

// Parse parses a SCIM filter (RFC 7644 §3.4.2.2): the operators eq ne co sw
// ew pr gt ge lt le, and/or/not, parentheses, value paths
// (emails[type eq "work" and value co "@x"]), sub-attributes
// (name.givenName), URN-qualified paths
// (urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value),
// JSON string, number, boolean and null values. Operators, keywords and
// true/false/null are case-insensitive. Entra's
// emails[type eq "work"].value eq "x" is accepted and means
// emails[type eq "work" and value eq "x"].
//
// Deliberately rejected, each with an *Error of ScimType InvalidFilter:
// unquoted string values (externalId eq jyoung), ordering operators with
// boolean or null values (active gt true, as RFC 7644 requires),
// substring operators with non-string values, value paths nested in value
// paths, input over MaxLength bytes or nested deeper than MaxDepth, and
// invalid UTF-8.
func Parse(s string) (Expr, error) {
	p := &parser{s: s, scimType: InvalidFilter}
	if err := p.checkInput(); err != nil {
		return nil, err
	}
	p.skipWS()
	if p.eof() {
		return nil, p.fail("empty filter")
	}
	e, err := p.parseOr(false)
	if err != nil {
		return nil, err
	}
	p.skipWS()
	if !p.eof() {
		return nil, p.fail("expected \"and\", \"or\" or end of filter")
	}
	return e, nil
}

// Path is an attribute path as used by PATCH operations and by the
// attributes and excludedAttributes parameters: attr, attr.sub, urn:…:attr,
// urn:…:attr.sub, attr[filter] or attr[filter].sub. With a Filter, Sub names
// the sub-attribute of the matching elements.
type Path struct {
	AttrPath
	// Filter selects elements of a multi-valued attribute, or is nil.
	Filter Expr
}

// String renders the path in canonical syntax.
func (p Path) String() string {
	if p.Filter == nil {
		return p.AttrPath.String()
	}
	head := AttrPath{URN: p.URN, Name: p.Name}.String() + "[" + p.Filter.String() + "]"
	if p.Sub != "" {
		head += "." + p.Sub
	}
	return head
}

// ParsePath parses an attribute path (RFC 7644 §3.5.2 PATH and §3.10).
// Surrounding spaces are ignored so that comma-separated attributes= lists
// can be split naively. Errors are *Error values with ScimType InvalidPath.
//
// A bare schema URN ("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
// parses as URN "urn:…:2.0" and Name "User", because a URN and an attribute
// are separated by the last colon; callers that know their schemas should
// compare the whole string against them first.
func ParsePath(s string) (Path, error) {
	p := &parser{s: s, scimType: InvalidPath}
	if err := p.checkInput(); err != nil {
		return Path{}, err
	}
	p.skipWS()
	ap, err := p.parseAttrPath(true)
	if err != nil {
		return Path{}, err
	}
	out := Path{AttrPath: ap}
	if p.peek() == '[' {
		if ap.Sub != "" {
			return Path{}, p.fail("value filter after a sub-attribute")
		}
		f, err := p.parseBracket()
		if err != nil {
			return Path{}, err
		}
		out.Filter = f
		if p.peek() == '.' {
			p.pos++
			sub, ok := p.readName()
			if !ok {
				return Path{}, p.fail("expected sub-attribute name")
			}
			out.Sub = sub
		}
	}
	p.skipWS()
	if !p.eof() {
		return Path{}, p.fail("unexpected character after path")
	}
	return out, nil
}

type parser struct {
	s        string
	pos      int
	depth    int
	scimType string
}

func (p *parser) checkInput() error {
	if len(p.s) > MaxLength {
		return p.fail(fmt.Sprintf("longer than %d bytes", MaxLength))
	}
	if !utf8.ValidString(p.s) {
		return p.fail("invalid UTF-8")
	}
	return nil
}

func (p *parser) fail(reason string) error {
	return &Error{ScimType: p.scimType, Offset: p.pos, Reason: reason}
}

func (p *parser) eof() bool { return p.pos >= len(p.s) }

func (p *parser) peek() byte {
	if p.eof() {
		return 0
	}
	return p.s[p.pos]
}

// skipWS skips spaces and reports whether it skipped any.
func (p *parser) skipWS() bool {
	start := p.pos
	for !p.eof() && isSpace(p.s[p.pos]) {
		p.pos++
	}
	return p.pos > start
}

func (p *parser) enter() error {
	p.depth++
	if p.depth > MaxDepth {
		return p.fail(fmt.Sprintf("nested deeper than %d", MaxDepth))
	}
	return nil
}

// keyword consumes word if it comes next, case-insensitively, and is not the
// start of a longer name.
func (p *parser) keyword(word string) bool {
	end := p.pos + len(word)
	if end > len(p.s) || !strings.EqualFold(p.s[p.pos:end], word) {
		return false
	}
	if end < len(p.s) && isNameChar(p.s[end]) {
		return false
	}
	p.pos = end
	return true
}

func (p *parser) parseOr(inValue bool) (Expr, error) {
	left, err := p.parseAnd(inValue)
	if err != nil {
		return nil, err
	}
	for {
		save := p.pos
		p.skipWS()
		if !p.keyword("or") {
			p.pos = save
			return left, nil
		}
		p.skipWS()
		right, err := p.parseAnd(inValue)
		if err != nil {
			return nil, err
		}
		left = &Logical{Op: Or, Left: left, Right: right}
	}
}

func (p *parser) parseAnd(inValue bool) (Expr, error) {
	left, err := p.parseUnary(inValue)
	if err != nil {
		return nil, err
	}
	for {
		save := p.pos
		p.skipWS()
		if !p.keyword("and") {
			p.pos = save
			return left, nil
		}
		p.skipWS()
		right, err := p.parseUnary(inValue)
		if err != nil {
			return nil, err
		}
		left = &Logical{Op: And, Left: left, Right: right}
	}
}

func (p *parser) parseUnary(inValue bool) (Expr, error) {
	p.skipWS()
	if p.eof() {
		return nil, p.fail("expected expression")
	}
	if p.peek() == '(' {
		return p.parseGroup(inValue)
	}
	save := p.pos
	if p.keyword("not") {
		p.skipWS()
		if p.peek() == '(' {
			x, err := p.parseGroup(inValue)
			if err != nil {
				return nil, err
			}
			return &Not{X: x}, nil
		}
		// An attribute that happens to be called "not".
		p.pos = save
	}
	return p.parseAttrExp(inValue)
}

// parseGroup parses "(" filter ")".
func (p *parser) parseGroup(inValue bool) (Expr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.pos++ // (
	e, err := p.parseOr(inValue)
	if err != nil {
		return nil, err
	}
	p.skipWS()
	if p.peek() != ')' {
		return nil, p.fail("expected \")\"")
	}
	p.pos++
	p.depth--
	return e, nil
}

// parseBracket parses "[" valFilter "]".
func (p *parser) parseBracket() (Expr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.pos++ // [
	f, err := p.parseOr(true)
	if err != nil {
		return nil, err
	}
	p.skipWS()
	if p.peek() != ']' {
		return nil, p.fail("expected \"]\"")
	}
	p.pos++
	p.depth--
	return f, nil
}

func (p *parser) parseAttrExp(inValue bool) (Expr, error) {
	ap, err := p.parseAttrPath(!inValue)
	if err != nil {
		return nil, err
	}
	if p.peek() == '[' {
		if inValue {
			return nil, p.fail("value path inside a value filter")
		}
		if ap.Sub != "" {
			return nil, p.fail("value filter after a sub-attribute")
		}
		f, err := p.parseBracket()
		if err != nil {
			return nil, err
		}
		vp := &ValuePath{Attr: ap, Filter: f}
		if p.peek() != '.' {
			return vp, nil
		}
		// Entra: emails[type eq "work"].value eq "x".
		p.pos++
		sub, ok := p.readName()
		if !ok {
			return nil, p.fail("expected sub-attribute name")
		}
		c, err := p.parseComparison(AttrPath{Name: sub})
		if err != nil {
			return nil, err
		}
		vp.Filter = &Logical{Op: And, Left: f, Right: c}
		return vp, nil
	}
	return p.parseComparison(ap)
}

// parseComparison parses SP compareOp SP compValue, or SP "pr", after ap.
func (p *parser) parseComparison(ap AttrPath) (Expr, error) {
	if !p.skipWS() {
		return nil, p.fail("expected space and operator after attribute path")
	}
	start := p.pos
	for !p.eof() && isAlpha(p.s[p.pos]) {
		p.pos++
	}
	word := strings.ToLower(p.s[start:p.pos])
	if !p.eof() && isNameChar(p.s[p.pos]) {
		p.pos = start
		return nil, p.fail("expected operator")
	}
	op := CompareOp(word)
	switch op {
	case Pr:
		return &Compare{Attr: ap, Op: Pr}, nil
	case Eq, Ne, Co, Sw, Ew, Gt, Ge, Lt, Le:
	default:
		p.pos = start
		return nil, p.fail("expected operator (eq ne co sw ew pr gt ge lt le)")
	}
	p.skipWS()
	valStart := p.pos
	v, err := p.parseValue()
	if err != nil {
		return nil, err
	}
	switch op {
	case Gt, Ge, Lt, Le:
		if _, ok := v.(bool); ok || v == nil {
			p.pos = valStart
			return nil, p.fail("ordering operator needs a string, number or date value")
		}
	case Co, Sw, Ew:
		if _, ok := v.(string); !ok {
			p.pos = valStart
			return nil, p.fail("substring operator needs a string value")
		}
	}
	return &Compare{Attr: ap, Op: op, Value: v}, nil
}

// parseValue parses compValue: a JSON string, number, true, false or null.
func (p *parser) parseValue() (any, error) {
	if p.eof() {
		return nil, p.fail("expected value")
	}
	if p.peek() == '"' {
		return p.parseString()
	}
	start := p.pos
	for !p.eof() && !isSpace(p.s[p.pos]) && p.s[p.pos] != ')' && p.s[p.pos] != ']' {
		p.pos++
	}
	word := p.s[start:p.pos]
	switch strings.ToLower(word) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "null":
		return nil, nil
	}
	if isJSONNumber(word) {
		f, err := strconv.ParseFloat(word, 64)
		if err != nil || math.IsInf(f, 0) {
			p.pos = start
			return nil, p.fail("number out of range")
		}
		return json.Number(word), nil
	}
	p.pos = start
	return nil, p.fail("expected quoted string, number, true, false or null")
}

func (p *parser) parseString() (string, error) {
	start := p.pos
	i := p.pos + 1
	for {
		if i >= len(p.s) {
			return "", p.fail("unterminated string")
		}
		c := p.s[i]
		if c == '\\' {
			i += 2
			continue
		}
		if c < 0x20 {
			p.pos = i
			return "", p.fail("control character in string")
		}
		if c == '"' {
			break
		}
		i++
	}
	var out string
	if err := json.Unmarshal([]byte(p.s[start:i+1]), &out); err != nil {
		return "", p.fail("invalid string escape")
	}
	p.pos = i + 1
	return out, nil
}

// parseAttrPath parses [URI ":"] ATTRNAME ["." ATTRNAME]; inside a value
// filter (top false) only a bare ATTRNAME is allowed.
func (p *parser) parseAttrPath(top bool) (AttrPath, error) {
	if top && len(p.s)-p.pos >= 4 && strings.EqualFold(p.s[p.pos:p.pos+4], "urn:") {
		start := p.pos
		end := p.pos
		for end < len(p.s) && isURNChar(p.s[end]) {
			end++
		}
		tok := p.s[start:end]
		i := strings.LastIndexByte(tok, ':')
		urn, tail := tok[:i], tok[i+1:]
		if len(urn) <= len("urn:") {
			return AttrPath{}, p.fail("expected schema URN")
		}
		name, sub, ok := splitNameSub(tail)
		if !ok {
			p.pos = start + i + 1
			return AttrPath{}, p.fail("expected attribute name after schema URN")
		}
		p.pos = end
		return AttrPath{URN: urn, Name: name, Sub: sub}, nil
	}
	name, ok := p.readName()
	if !ok {
		return AttrPath{}, p.fail("expected attribute name")
	}
	ap := AttrPath{Name: name}
	if top && p.peek() == '.' {
		p.pos++
		sub, ok := p.readName()
		if !ok {
			return AttrPath{}, p.fail("expected sub-attribute name")
		}
		ap.Sub = sub
	}
	return ap, nil
}

// readName reads ATTRNAME = ALPHA *(ALPHA / DIGIT / "-" / "_"), also
// allowing a leading "$" for "$ref" (RFC 7643 erratum 8924).
func (p *parser) readName() (string, bool) {
	if p.eof() || !(isAlpha(p.s[p.pos]) || p.s[p.pos] == '$') {
		return "", false
	}
	start := p.pos
	p.pos++
	for !p.eof() && isNameChar(p.s[p.pos]) {
		p.pos++
	}
	return p.s[start:p.pos], true
}

// splitNameSub splits "name" or "name.sub" and validates both names.
func splitNameSub(s string) (name, sub string, ok bool) {
	name, sub, hasSub := strings.Cut(s, ".")
	if !validName(name) || (hasSub && !validName(sub)) {
		return "", "", false
	}
	return name, sub, true
}

func validName(s string) bool {
	if s == "" || !(isAlpha(s[0]) || s[0] == '$') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isNameChar(s[i]) {
			return false
		}
	}
	return true
}

// isJSONNumber reports whether s matches the JSON number grammar
// (RFC 8259 §6).
func isJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || !isDigit(s[i]) {
			return false
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || !isDigit(s[i]) {
			return false
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	return i == len(s)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
func isAlpha(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isNameChar(c byte) bool {
	return isAlpha(c) || isDigit(c) || c == '-' || c == '_'
}

// isURNChar accepts the characters of the schema URNs SCIM uses (RFC 8141
// NSS characters minus the ones that delimit filters), plus "$" for
// "urn:…:manager.$ref".
func isURNChar(c byte) bool {
	return isNameChar(c) || c == ':' || c == '.' || c == '%' || c == '+' || c == '~' || c == '$'
}
