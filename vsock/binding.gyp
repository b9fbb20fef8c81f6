{
  "targets": [
    {
      "target_name": "hull_vsock",
      "sources": ["src/vsock.c", "src/console.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
