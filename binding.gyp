{
  "targets": [
    {
      "target_name": "tandem_native",
      "sources": ["src/native/tandem_native.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
