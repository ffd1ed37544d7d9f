set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/entropy_vs_fluctuation_fluctuation.png.tmp.12210'
$s0 << EOD
2 63.8468424
3 32.6293945
4 16.9189453
5 9.97314453
6 5.64371745
EOD
$s1 << EOD
2 65.1529948
3 32.5032552
4 19.7265625
5 9.7249349
6 6.69352214
EOD
$s2 << EOD
2 83.3292643
3 66.800944
4 55.9611003
5 43.6401367
6 30.0537109
EOD
set title "Entropy vs fluctuation per layer (graph-of-tokens\nProposition 1): routing fluctuation per epoch"
set xlabel "epoch"
set ylabel "top-1 fluctuation (%, mean over layers and seeds)"
set grid
set key outside right top
set xtics 1
plot $s0 using 1:2 with linespoints lw 2 title "SMoE (token choice)", $s1 using 1:2 with linespoints lw 2 title "Similarity-Aware SMoE", $s2 using 1:2 with linespoints lw 2 title "Attention-Aware SMoE"
