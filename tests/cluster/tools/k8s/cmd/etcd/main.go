// Command etcd is etcd's own entry point, built from the module version that
// k8s.io/kubernetes v1.35.4 pins, so the API server and its store always match.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
