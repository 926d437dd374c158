"""The price book file format and the shipped default price book (default_price_book.json)."""
