// dump
