package probes

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
)

// Reading the large parts of an executable with one allocation each.
// debug/elf's Section.Data grows its buffer 10 MiB at a time (it cannot
// trust a section's size) and File.Symbols makes a string of every name:
// opening kube-apiserver that way allocated 255 MB and copied most of it,
// and the garbage collector and the copies kept the tracer's reader off
// the CPU for up to 200 ms while the ring buffer filled. A section that
// lies inside the file can be trusted with its size.

// binSectionBytes returns a section's contents, read at once into a slice
// of its exact size.
func binSectionBytes(s *elf.Section, fileSize int64) ([]byte, error) {
	if s.Flags&elf.SHF_COMPRESSED != 0 {
		// Only debug sections are compressed; debug/elf knows the formats.
		return s.Data()
	}
	if err := binInFile(s, fileSize); err != nil {
		return nil, err
	}
	data := make([]byte, s.Size)
	if _, err := s.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("section %s: %w", s.Name, err)
	}
	return data, nil
}

func binInFile(s *elf.Section, fileSize int64) error {
	if s.Offset > uint64(fileSize) || s.Size > uint64(fileSize)-s.Offset {
		return fmt.Errorf("section %s (%d bytes at offset %#x) runs past the end of the %d-byte file", s.Name, s.Size, s.Offset, fileSize)
	}
	return nil
}

// binSymbolValues returns the values of the named symbols in .symtab
// (absent names are missing from the map), comparing names in place.
func binSymbolValues(ef *elf.File, fileSize int64, names ...string) (map[string]uint64, error) {
	symtab := ef.Section(".symtab")
	if symtab == nil {
		return nil, nil
	}
	if symtab.Link == 0 || int(symtab.Link) >= len(ef.Sections) {
		return nil, fmt.Errorf("section .symtab links no string table (link %d)", symtab.Link)
	}
	syms, err := binSectionBytes(symtab, fileSize)
	if err != nil {
		return nil, err
	}
	strs, err := binSectionBytes(ef.Sections[symtab.Link], fileSize)
	if err != nil {
		return nil, err
	}
	const entry = 24 // Elf64_Sym: name, info, other, shndx, value, size
	want := make([][]byte, len(names))
	for i, n := range names {
		want[i] = append([]byte(n), 0)
	}
	found := make(map[string]uint64, len(names))
	for off := 0; off+entry <= len(syms) && len(found) < len(names); off += entry {
		at := binary.LittleEndian.Uint32(syms[off:])
		if int64(at) >= int64(len(strs)) {
			continue
		}
		for i, w := range want {
			if bytes.HasPrefix(strs[at:], w) {
				if _, dup := found[names[i]]; !dup {
					found[names[i]] = binary.LittleEndian.Uint64(syms[off+8:])
				}
			}
		}
	}
	return found, nil
}
