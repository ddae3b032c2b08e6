"""Address parsing: the accepted forms, and hostile strings that must fail instead of being repaired."""

import pytest

from mailer.addresses import AddressError, Mailbox, parse_address_list, parse_mailbox

ACCEPTED = [
    ("ada@example.com", "", "ada@example.com"),
    ("  ada@example.com  ", "", "ada@example.com"),
    ("Ada@Example.COM", "", "Ada@example.com"),
    ("Ada Lovelace <ada@example.com>", "Ada Lovelace", "ada@example.com"),
    ('"Lovelace, Ada" <ada@example.com>', "Lovelace, Ada", "ada@example.com"),
    ('"Ada \\"The Countess\\" L." <ada@example.com>', 'Ada "The Countess" L.', "ada@example.com"),
    ("Dr. Ada O'Brien <ada@example.com>", "Dr. Ada O'Brien", "ada@example.com"),
    ("<ada@example.com>", "", "ada@example.com"),
    ("Ada < ada@example.com >", "Ada", "ada@example.com"),
    ("Zoë Ünal <zoe@bücher.de>", "Zoë Ünal", "zoe@bücher.de"),
    # A quoted name may look like an address; what counts is the one addr-spec in <>.
    ('"a@x.com" <b@y.com>', "a@x.com", "b@y.com"),
]


@pytest.mark.parametrize(("text", "display_name", "addr_spec"), ACCEPTED)
def test_accepted_forms_parse_to_one_mailbox(text: str, display_name: str, addr_spec: str) -> None:
    assert parse_mailbox(text, "from") == Mailbox(display_name, addr_spec)
    assert parse_address_list([text], "to") == [Mailbox(display_name, addr_spec)]


REFUSED = [
    ("a@x.com\r\nBcc: evil@x.com", "CR, LF"),
    ("a@x.com\nBcc: evil@x.com", "CR, LF"),
    ("Ada\r\nBcc: evil@x.com <a@x.com>", "CR, LF"),
    ('"Ada\r\nBcc: evil@x.com" <a@x.com>', "CR, LF"),
    ("a@x.com\x00", "control characters"),
    ("ada\u2028@x.com", "control characters"),
    ("a@x.com, b@y.com", "expected one address, found ','"),
    ("Lovelace, Ada <ada@example.com>", "expected one address, found ','"),
    ("a@x.com b@y.com", "whitespace"),
    ("a@x.com <b@y.com>", "display name contains '@'"),
    ("<a@x.com> <b@y.com>", "unexpected text after '>'"),
    ("Ada <a@x.com> b@y.com", "unexpected text after '>'"),
    ("Ada <a@x.com", "missing '>'"),
    ("Ada <<a@x.com>>", "stray '<'"),
    ("a@x.com>", "'>'"),
    ("Ada (the countess) <a@x.com>", "'('"),
    ("a@x.com (Ada)", "unexpected '(' ')'"),
    ("undisclosed-recipients:;", "':'"),
    ("team: a@x.com;", "':'"),
    ("a@x.com; b@y.com", "';'"),
    ('"Ada <a@x.com>', "unterminated quoted display name"),
    ('"Ada" a@x.com', "must be followed by <address>"),
    ('"a b"@x.com', "must be followed by <address>"),
    ("Ada <>", "empty <>"),
    ("", "empty address"),
    ("   ", "empty address"),
    ("bob@", "'bob@' is not a valid email address (There must be something after the @-sign)"),
    ("@x.com", "is not a valid email address"),
    ("a@[127.0.0.1]", "is not a valid email address"),
    ("a@localhost", "is not a valid email address"),
    # Valid per email-validator, but Python's email package would decode and re-emit it raw.
    ("=?utf-8?q?a=0D=0ABcc=3A_e=40x.com?=@y.com", "encoded-word"),
    ('"=?utf-8?q?a=0D=0ABcc:_e@x.com?=" <b@y.com>', "encoded-word"),
]


@pytest.mark.parametrize(("text", "expected"), REFUSED)
def test_hostile_or_malformed_single_address_is_refused(text: str, expected: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_mailbox(text, "from")
    message = str(caught.value)
    assert caught.value.field == "from"
    assert message.startswith("from: ")
    assert expected in message
    assert "\r" not in message and "\n" not in message and "\x00" not in message


@pytest.mark.parametrize(("text", "expected"), REFUSED)
def test_hostile_list_element_names_its_index(text: str, expected: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address_list(["ok@example.com", text], "to")
    assert caught.value.field == "to[1]"
    assert expected in str(caught.value)


def test_comma_separated_string_gives_each_address_in_order() -> None:
    parsed = parse_address_list('"Lovelace, Ada" <ada@example.com>, bob@example.com,Carol <carol@example.org>', "to")
    assert parsed == [
        Mailbox("Lovelace, Ada", "ada@example.com"),
        Mailbox("", "bob@example.com"),
        Mailbox("Carol", "carol@example.org"),
    ]


def test_bad_entry_in_comma_separated_string_says_which_one() -> None:
    with pytest.raises(AddressError) as caught:
        parse_address_list("ada@example.com, bob@", "cc")
    assert caught.value.field == "cc"
    assert "'bob@' is not a valid email address" in str(caught.value)
    assert "address 2 of the comma-separated list" in str(caught.value)


def test_empty_entry_between_commas_is_refused() -> None:
    with pytest.raises(AddressError, match="empty address"):
        parse_address_list("a@example.com,,b@example.com", "to")


def test_empty_string_holds_no_addresses() -> None:
    assert parse_address_list("", "cc") == []
    assert parse_address_list([], "cc") == []


@pytest.mark.parametrize(
    ("value", "field", "expected"),
    [
        (5, "cc", "cc: expected a string or a list of strings, got number"),
        ({"name": "Ada", "address": "ada@example.com"}, "to", "to: expected a string or a list of strings, got map"),
        (None, "bcc", "bcc: expected a string or a list of strings, got null"),
        (["a@example.com", 7], "to", "to[1]: expected a string, got number"),
        (["a@example.com", ["b@example.com"]], "to", "to[1]: expected a string, got array"),
    ],
)
def test_wrong_types_name_the_field(value: object, field: str, expected: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address_list(value, field)
    assert str(caught.value) == expected


def test_single_address_field_refuses_a_list() -> None:
    with pytest.raises(AddressError, match=r"^replyTo: expected a single address string, got array$"):
        parse_mailbox(["a@example.com"], "replyTo")


def test_idn_domain_is_carried_in_ascii_without_smtputf8() -> None:
    mailbox = parse_mailbox("Zoë <zoe@Bücher.de>", "to")
    assert mailbox.addr_spec == "zoe@bücher.de"
    assert mailbox.wire_addr_spec() == "zoe@xn--bcher-kva.de"
    assert mailbox.needs_smtputf8() is False
    assert mailbox.domain() == "bücher.de"


def test_non_ascii_local_part_needs_smtputf8() -> None:
    mailbox = parse_mailbox("jörg@bücher.de", "to")
    assert mailbox.needs_smtputf8() is True
    assert mailbox.wire_addr_spec() == "jörg@bücher.de"


def test_ascii_address_does_not_need_smtputf8() -> None:
    assert parse_mailbox("ada@example.com", "to").needs_smtputf8() is False


def test_mailbox_built_directly_is_validated_and_normalized() -> None:
    assert Mailbox("", "Ada@Example.COM").addr_spec == "Ada@example.com"
    with pytest.raises(AddressError, match="^addr_spec: 'not an address' is not a valid email address"):
        Mailbox("", "not an address")
    with pytest.raises(AddressError, match="^display_name: display names must not contain CR, LF"):
        Mailbox("Ada\r\nBcc: evil@x.com", "ada@example.com")
    with pytest.raises(AddressError, match="encoded-word"):
        Mailbox("=?utf-8?q?x?=", "ada@example.com")


@pytest.mark.parametrize("addr_spec", ['"a b"@example.com', "a@[127.0.0.1]", "a@[IPv6:::1]"])
def test_mailbox_refuses_quoted_local_parts_and_ip_literals(addr_spec: str) -> None:
    with pytest.raises(AddressError, match="is not a valid email address"):
        Mailbox("", addr_spec)
